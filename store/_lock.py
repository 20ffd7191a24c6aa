"""Writer locks on a feature set: ``fcntl.flock`` on local disk, lease files on shared filesystems.

Concurrent read-modify-write of one Zarr chunk silently loses data, so a feature set has
either one writer for all rows, or several writers over disjoint, chunk-aligned row ranges:

- a whole-set writer holds an exclusive lock on ``.lock``;
- a range writer holds a shared lock on ``.lock`` (so no whole-set writer can start) and an
  exclusive lock on ``.lock.rows-START-STOP``; it refuses to start if a live writer holds an
  overlapping range.

``flock`` locks die with their process, so a writer killed with SIGKILL never leaves a
stale lock behind: the lock *file* may remain, but nobody holds it.

On NFS, Lustre, GPFS, CephFS and the like ``flock`` is not reliable, so there the same rules
are kept with lease files (``store/_lease.py``): ``.lease`` for a whole-set writer,
``.lease.rows-START-STOP`` for a range writer; each writer creates its own with an exclusive
create, then looks for a conflicting live lease and gives its own up if it finds one (of two
writers racing, at worst both give up; never both write). :func:`lock_kind` chooses:
``VIDEOFEAT_LOCKS=flock|lease`` forces one, otherwise the filesystem type of the store
(``/proc/self/mounts``) decides.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from pathlib import Path

from store import _lease
from store.errors import StoreLocked

_RANGE_RE = re.compile(r"^\.lock\.rows-(\d+)-(\d+)$")
_LEASE_RANGE_RE = re.compile(r"^\.lease\.rows-(\d+)-(\d+)$")
LOCKS_ENV = "VIDEOFEAT_LOCKS"
#: Filesystem types (as /proc/mounts names them) on which flock is not trusted.
SHARED_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "ceph", "fuse.ceph", "cifs", "smb3", "smbfs", "glusterfs",
    "fuse.glusterfs", "beegfs", "fuse.sshfs", "9p", "afs", "panfs", "wekafs", "fuse.juicefs",
})


def mount_type(path: Path, mounts: str | None = None) -> str:
    """The filesystem type of the mount holding ``path`` (longest mount point that contains it).

    Args:
        path: any path (need not exist yet: its nearest existing parent is used).
        mounts: the text of ``/proc/self/mounts``; read from the system when None.

    Returns:
        e.g. ``"ext4"``, ``"nfs4"``, ``"lustre"``; ``"unknown"`` when the mount table cannot be read.
    """
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return "unknown"
    path = Path(os.path.abspath(path))
    best, kind = -1, "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if (path == Path(point) or Path(point) in path.parents) and len(point) > best:
            best, kind = len(point), fields[2]
    return kind


def lock_kind(path: Path) -> str:
    """``"flock"`` or ``"lease"`` for a store at ``path`` (see the module docstring)."""
    forced = os.environ.get(LOCKS_ENV, "").strip().lower()
    if forced in ("flock", "lease"):
        return forced
    return "lease" if mount_type(path) in SHARED_FILESYSTEMS else "flock"


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
        self._leases: list[_lease.Lease] = []

    def acquire(self) -> WriterLock:
        if lock_kind(self.set_dir) == "lease":
            return self._acquire_leases()
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

    def _acquire_leases(self) -> WriterLock:
        """The same rules as the flock path, with lease files (``store/_lease.py``)."""
        whole = self.set_dir / ".lease"
        if self.rows is None:
            mine = _lease.Lease(whole)
            if not mine.try_acquire():
                raise StoreLocked(f"feature set {self.set_dir.name!r} is being written by another process "
                                  f"({_lease.describe(whole)}); wait for it or stop it first")
            self._leases.append(mine)
            for other, _, _ in self._range_leases():
                self.release()
                raise StoreLocked(f"feature set {self.set_dir.name!r} is being written by a shard writer "
                                  f"({_lease.describe(other)}); wait for it or stop it first")
            return self
        start, stop = self.rows
        if _lease.is_live(whole):
            raise StoreLocked(f"feature set {self.set_dir.name!r} is being written by a whole-set writer "
                              f"({_lease.describe(whole)}); shard writers cannot start until it stops")
        mine = _lease.Lease(self.set_dir / f".lease.rows-{start}-{stop}")
        if not mine.try_acquire():
            raise StoreLocked(f"rows {start}:{stop} of {self.set_dir.name!r} are already being written "
                              f"({_lease.describe(mine.path)})")
        self._leases.append(mine)
        for other, o_start, o_stop in self._range_leases(exclude=mine.path):
            if o_start < stop and start < o_stop:
                self.release()
                raise StoreLocked(f"rows {start}:{stop} of {self.set_dir.name!r} overlap rows {o_start}:{o_stop} held "
                                  f"by a live writer ({_lease.describe(other)}); give each writer a disjoint range")
        if _lease.is_live(whole):  # a whole-set writer started while we looked: give way
            self.release()
            raise StoreLocked(f"feature set {self.set_dir.name!r} is being written by a whole-set writer "
                              f"({_lease.describe(whole)}); shard writers cannot start until it stops")
        return self

    def _range_leases(self, exclude: Path | None = None) -> list[tuple[Path, int, int]]:
        """Live range leases of the set (stale ones are broken on the way)."""
        out = []
        for other in self.set_dir.iterdir():
            m = _LEASE_RANGE_RE.match(other.name)
            if not m or other == exclude:
                continue
            if _lease.is_live(other):
                out.append((other, int(m.group(1)), int(m.group(2))))
            else:
                _lease.break_stale(other)
        return out

    def check(self) -> None:
        """Raise StoreLocked if a lease of ours was broken (we were taken for dead); flock: nothing."""
        for lease in self._leases:
            if not lease.check():
                raise StoreLocked(f"the writer lock on {self.set_dir.name!r} was taken over ({lease.path.name} "
                                  f"not renewed for {_lease.STALE_S:.0f} s: was this process suspended?); "
                                  "stop and rerun to resume")

    def release(self) -> None:
        for fd in reversed(self._fds):
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._fds.clear()
        for lease in reversed(self._leases):
            lease.release()
        self._leases.clear()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_locked(set_dir: Path) -> bool:
    """Whether any live writer (whole-set or shard) currently holds the feature set."""
    if lock_kind(set_dir) == "lease":
        leases = [set_dir / ".lease"] + [p for p in set_dir.iterdir() if _LEASE_RANGE_RE.match(p.name)]
        return any(_lease.is_live(p) for p in leases)
    main = set_dir / ".lock"
    if not main.exists():
        return False
    fd = _try_flock(main, fcntl.LOCK_EX)
    if fd is None:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    return False


class FileLock:
    """An exclusive lock on one file of the store (the append lock): ``flock``, or a lease on shared filesystems.

    Used as ``with FileLock(path) as held:``; ``held`` is False only for ``blocking=False`` when
    another live process holds it. A blocking lease waits, polling every 0.2 s.
    """

    def __init__(self, path: Path, blocking: bool = True) -> None:
        self.path, self.blocking, self.fd = path, blocking, -1
        self.lease: _lease.Lease | None = None

    def __enter__(self) -> bool:
        if lock_kind(self.path.parent) == "lease":
            lease = _lease.Lease(self.path.with_name(self.path.name + ".lease"))
            while not lease.try_acquire():
                if not self.blocking:
                    return False
                time.sleep(0.2)
            self.lease = lease
            return True
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(self.fd)
            self.fd = -1
            return False
        return True

    def __exit__(self, *exc: object) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1
