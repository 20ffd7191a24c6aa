"""glibc's malloc thresholds for commands that churn through large NumPy temporaries, and handing
freed heap pages back to the OS before a step that plans by the resident size.

glibc returns freed memory to the OS once the free space at the top of a heap passes
``M_TRIM_THRESHOLD`` (128 KiB until its adaptive rule raises it, which it does for the main
thread's heap only when an ``mmap``-ed block is freed), and serves blocks above
``M_MMAP_THRESHOLD`` with fresh ``mmap`` pages. A loop that allocates and frees the same 8-40 MB
arrays on every pass, as the fusion stackers' row blocks do in worker threads, then faults its
pages in again on every pass: at 40,000 fit rows the threaded logistic fit spent 6.3 of its
19.6 CPU seconds in the kernel (1.5M page faults); with the thresholds below, 0.6 (20k faults).
32 / 64 MiB are what glibc's own adaptive thresholds reach; the heap keeps at most that much
free memory per arena.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def _glibc() -> ctypes.CDLL | None:
    """The C library, where it is glibc (None elsewhere: musl, macOS)."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def raise_malloc_thresholds() -> bool:
    """Set glibc's mmap threshold to :data:`MMAP_THRESHOLD` and its trim threshold to
    :data:`TRIM_THRESHOLD` for this process (every thread's heap).

    Returns:
        Whether they were set (False where the C library is not glibc).
    """
    libc = _glibc()
    if libc is None:  # not glibc: its thresholds do not exist there
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    log.debug("malloc thresholds: mmap %d MiB, trim %d MiB (%s)", MMAP_THRESHOLD >> 20, TRIM_THRESHOLD >> 20,
              "set" if ok else "refused")
    return ok


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the OS (glibc's ``malloc_trim(0)``), so that the resident
    size measured next is what the process holds, not what an earlier stage freed.

    Returns:
        Whether memory was released (False where the C library is not glibc, or nothing was free).
    """
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))
