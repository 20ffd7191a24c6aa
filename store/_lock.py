"""Writer locks on a feature set, with ``fcntl.flock`` on local disk.

Concurrent read-modify-write of one Zarr chunk silently loses data, so a feature set has
either one writer for all rows, or several writers over disjoint, chunk-aligned row ranges:

- a whole-set writer holds an exclusive lock on ``.lock``;
- a range writer holds a shared lock on ``.lock`` (so no whole-set writer can start) and an
  exclusive lock on ``.lock.rows-START-STOP``; it refuses to start if a live writer holds an
  overlapping range.

``flock`` locks die with their process, so a writer killed with SIGKILL never leaves a
stale lock behind: the lock *file* may remain, but nobody holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from pathlib import Path

from store.errors import StoreLocked

_RANGE_RE = re.compile(r"^\.lock\.rows-(\d+)-(\d+)$")


def _owner() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname()})


def _try_flock(path: Path, mode: int) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown process"
    except OSError:
        return "unknown process"


class WriterLock:
    """The lock a feature-set writer holds while it writes (a context manager).

    Args:
        set_dir: The feature set's directory.
        rows: None for a whole-set writer, else the half-open row range ``(start, stop)``.
    """

    def __init__(self, set_dir: Path, rows: tuple[int, int] | None = None) -> None:
        self.set_dir = set_dir
        self.rows = rows
        self._fds: list[int] = []

    def acquire(self) -> WriterLock:
        main = self.set_dir / ".lock"
        if self.rows is None:
            fd = _try_flock(main, fcntl.LOCK_EX)
            if fd is None:
                raise StoreLocked(
                    f"feature set {self.set_dir.name!r} is being written by another process "
                    f"({_holder(main)} or a shard writer); wait for it or stop it first"
                )
            os.ftruncate(fd, 0)
            os.write(fd, _owner().encode())
            self._fds.append(fd)
            return self
        fd = _try_flock(main, fcntl.LOCK_SH)
        if fd is None:
            raise StoreLocked(
                f"feature set {self.set_dir.name!r} is being written by a whole-set writer "
                f"({_holder(main)}); shard writers cannot start until it stops"
            )
        self._fds.append(fd)
        start, stop = self.rows
        mine = self.set_dir / f".lock.rows-{start}-{stop}"
        fd = _try_flock(mine, fcntl.LOCK_EX)
        if fd is None:
            self.release()
            raise StoreLocked(f"rows {start}:{stop} of {self.set_dir.name!r} are already being written")
        os.ftruncate(fd, 0)
        os.write(fd, _owner().encode())
        self._fds.append(fd)
        for other in self.set_dir.iterdir():
            m = _RANGE_RE.match(other.name)
            if not m or other == mine:
                continue
            o_start, o_stop = int(m.group(1)), int(m.group(2))
            if o_start >= stop or start >= o_stop:
                continue
            probe = _try_flock(other, fcntl.LOCK_EX)
            if probe is None:
                self.release()
                raise StoreLocked(
                    f"rows {start}:{stop} of {self.set_dir.name!r} overlap rows {o_start}:{o_stop} "
                    f"held by a live writer ({_holder(other)}); give each writer a disjoint range"
                )
            other.unlink(missing_ok=True)  # a dead writer's file: nobody holds it
            os.close(probe)
        return self

    def release(self) -> None:
        for fd in reversed(self._fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._fds.clear()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(set_dir: Path) -> bool:
    """Whether any live writer (whole-set or shard) currently holds the feature set."""
    main = set_dir / ".lock"
    if not main.exists():
        return False
    fd = _try_flock(main, fcntl.LOCK_EX)
    if fd is None:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return False
