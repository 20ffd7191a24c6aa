"""store.malloc: glibc's thresholds are set (their effect: tests/fusion/test_blocks.py); free heap pages go back."""

import platform

import pytest

from store.malloc import raise_malloc_thresholds, release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_thresholds_are_set():
    assert raise_malloc_thresholds() is True


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc_trim only")
def test_free_heap_pages_go_back_to_the_os():
    """Small blocks freed below a live one stay in the heap until malloc_trim hands their pages back."""
    blocks = [bytearray(4000) for _ in range(50_000)]  # ~200 MB of heap blocks (below the mmap threshold)
    keep = bytearray(4000)  # allocated above them: the heap's top cannot shrink past it
    before = _resident_bytes()
    del blocks
    freed = _resident_bytes()
    assert release_free_memory() is True
    after = _resident_bytes()
    assert before - freed < 50 << 20 < freed - after  # free() kept the pages, the trim returned them
    del keep
