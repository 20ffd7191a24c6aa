"""store.malloc: glibc's thresholds are set (their effect: tests/fusion/test_blocks.py)."""

import platform

import pytest

from store.malloc import raise_malloc_thresholds


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_thresholds_are_set():
    assert raise_malloc_thresholds() is True
