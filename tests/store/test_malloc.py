"""store.malloc: glibc's thresholds are set (their effect: tests/fusion/test_blocks.py); free heap pages go back."""

import os
import platform

import pytest

from store.malloc import raise_malloc_thresholds, release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_thresholds_are_set():
    assert raise_malloc_thresholds() is True


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim only")
def test_free_heap_pages_go_back_to_the_os():
    """Heap blocks freed between live ones stay resident until malloc_trim hands their pages back."""
    blocks = [bytearray(64 << 10) for _ in range(3000)]  # ~190 MB of heap blocks (below the mmap threshold)
    before = _resident_bytes()
    del blocks[::2]  # every other block: each freed one sits between live ones, so free() cannot shrink the heap
    freed = _resident_bytes()
    assert release_free_memory() is True
    after = _resident_bytes()
    assert before - freed < 20 << 20 and freed - after > 60 << 20  # ~94 MB freed: free() kept it, the trim did not
    del blocks
