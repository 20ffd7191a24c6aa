"""Lease files: a lock that holds on shared filesystems (NFS, Lustre, GPFS, CephFS) without ``flock``.

``flock`` over NFS is emulated with byte-range locks by some clients, ignored by others, and
lost when a client reboots; on Lustre it works only when the filesystem is mounted with
``-o flock``. A lease relies on what those filesystems do guarantee:

- **exclusive create**: ``open(O_CREAT | O_EXCL)`` of a lease file succeeds for exactly one
  process (NFSv3 and later, Lustre, GPFS and CephFS implement it atomically on the server);
- **atomic rename** within a directory, used to break a stale lease: of two processes
  breaking the same lease, one rename succeeds and the other finds no file;
- **mtime set by the server**: ``utime(path)`` with no times stamps the server's clock, and a
  probe file created in the same directory tells the server's "now", so staleness never
  compares two nodes' clocks.

A lease file holds ``{"host", "pid", "token"}`` as JSON. While held, a daemon thread renews it
(``utime``) every :data:`HEARTBEAT_S` seconds. A lease is **stale**, and may be broken, when
its holder is on this host and its pid is gone (a SIGKILLed writer: at once), or when it was
not renewed for :data:`STALE_S` seconds by the server's clock (a dead node). A holder whose
lease was broken (stopped for longer than ``STALE_S``, e.g. a suspended job) sees it at its
next :meth:`Lease.check` and stops writing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

HEARTBEAT_S = 10.0  # how often a holder renews its lease
STALE_S = 60.0  # a lease not renewed for this long (server clock) belongs to a dead node


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def server_now(directory: Path) -> float:
    """The filesystem server's current time: the mtime of a file created now in ``directory``.

    This machine's clock when the directory is not writable (a reader on a read-only mount).
    """
    probe = directory / f".clock-{uuid.uuid4().hex[:12]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except OSError:
        return time.time()
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)


def read_holder(path: Path) -> dict | None:
    """The lease's ``{"host", "pid", "token"}``, or None when there is no (readable) lease."""
    try:
        return json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written right now, or damaged: judged by its age alone


def describe(path: Path) -> str:
    """``pid P on HOST`` for messages."""
    holder = read_holder(path) or {}
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"


def is_live(path: Path) -> bool:
    """Whether a lease file exists and its holder is alive (see the module docstring)."""
    holder = read_holder(path)
    if holder is None:
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        if not _pid_alive(holder["pid"]):
            return False
    try:
        age = server_now(path.parent) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age < STALE_S


def break_stale(path: Path) -> None:
    """Remove a stale lease: rename it aside first, so that of two breakers only one removes it."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # someone else broke it
    aside.unlink(missing_ok=True)


class Lease:
    """One lease file (see the module docstring); :meth:`try_acquire`, :meth:`check`, :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def try_acquire(self) -> bool:
        """Create the lease; break it first if it is stale. False when a live holder has it."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if is_live(self.path):
                    return False
                break_stale(self.path)
                continue
            try:
                os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                         "token": self.token}).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._thread = threading.Thread(target=self._renew, name=f"lease {self.path.name}", daemon=True)
            self._thread.start()
            return True
        return False

    def beat(self) -> None:
        """Renew the lease now (server time); marks it lost when another holder replaced it."""
        if (read_holder(self.path) or {}).get("token") != self.token:
            self.lost = True
            return
        os.utime(self.path)

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
            except OSError:  # a transient server error: the next beat tries again
                continue

    def check(self) -> bool:
        """Whether the lease is still ours (False after it was broken as stale)."""
        if not self.lost and (read_holder(self.path) or {}).get("token") != self.token:
            self.lost = True
        return not self.lost

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if (read_holder(self.path) or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)
