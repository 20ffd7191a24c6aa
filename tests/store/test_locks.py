"""Writer locks on shared filesystems: lease files (store/_lease.py) and the choice of lock kind."""

import json
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from store import FeatureSetSpec, FeatureStore, _lease, _lock
from store import errors as E
from store.verify import verify_store

MOUNTS = """\
sysfs /sys sysfs rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/shared nfs4 rw,relatime,vers=4.2 0 0
fs@tcp:/lustre /mnt/shared/lustre lustre rw,flock 0 0
/dev/sdb1 /mnt/my\\040disk xfs rw 0 0
"""


@pytest.mark.parametrize("path, kind", [
    ("/home/u/s.zarr", "ext4"), ("/mnt/shared/runs/s.zarr", "nfs4"), ("/mnt/shared", "nfs4"),
    ("/mnt/shared/lustre/x/s.zarr", "lustre"), ("/mnt/sharedother/s.zarr", "ext4"), ("/mnt/my disk/s.zarr", "xfs"),
])
def test_the_mount_holding_a_path_is_the_longest_that_contains_it(path, kind):
    assert _lock.mount_type(Path(path), MOUNTS) == kind


def test_lock_kind_follows_the_filesystem_unless_forced(tmp_path, monkeypatch):
    monkeypatch.delenv(_lock.LOCKS_ENV, raising=False)
    monkeypatch.setattr(_lock, "mount_type", lambda path, mounts=None: "nfs4")
    assert _lock.lock_kind(tmp_path) == "lease"
    monkeypatch.setattr(_lock, "mount_type", lambda path, mounts=None: "ext4")
    assert _lock.lock_kind(tmp_path) == "flock"
    monkeypatch.setenv(_lock.LOCKS_ENV, "lease")
    assert _lock.lock_kind(tmp_path) == "lease"


@pytest.fixture
def fset(tmp_path, monkeypatch):
    monkeypatch.setenv(_lock.LOCKS_ENV, "lease")
    fs = FeatureStore.create(tmp_path / "s.zarr", classes=["a", "b"])
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(8)], "path": "x", "split": "train"}))
    return fs.create_feature_set("f", FeatureSetSpec(clips=1, dim=2, chunk_rows=4))


def _plant(path: Path, host: str, pid: int, age_s: float) -> None:
    """A lease file of another holder, last renewed ``age_s`` seconds ago."""
    path.write_text(json.dumps({"host": host, "pid": pid, "token": "theirs"}))
    now = _lease.server_now(path.parent)
    os.utime(path, (now - age_s, now - age_s))


def test_leases_keep_the_writer_rules(fset):
    with fset.writer():
        assert (fset.path / ".lease").is_file() and _lock.is_locked(fset.path)
        with pytest.raises(E.StoreLocked, match="being written by another process"):
            fset.writer().__enter__()
        with pytest.raises(E.StoreLocked, match="whole-set writer"):
            fset.writer(rows=(0, 4)).__enter__()
    assert not (fset.path / ".lease").exists() and not _lock.is_locked(fset.path)
    with fset.writer(rows=(0, 4)) as a, fset.writer(rows=(4, 8)) as b:
        a.write_rows([1], np.ones((1, 1, 2)))
        b.write_rows([6], np.ones((1, 1, 2)))
        with pytest.raises(E.StoreLocked, match="shard writer"):
            fset.writer().__enter__()
        assert not (fset.path / ".lease").exists()  # the refused whole-set writer gave its lease up
    np.testing.assert_array_equal(np.flatnonzero(fset.done()), [1, 6])


def test_a_live_lease_of_another_node_is_respected_and_a_stale_one_broken(fset):
    _plant(fset.path / ".lease", "node-17", 4242, age_s=5)
    with pytest.raises(E.StoreLocked, match="pid 4242 on node-17"):
        fset.writer().__enter__()
    assert verify_store(fset.store.path).ok
    _plant(fset.path / ".lease", "node-17", 4242, age_s=_lease.STALE_S + 30)  # the node died
    with fset.writer() as w:
        w.write_rows([0], np.ones((1, 1, 2)))
    assert not list(fset.path.glob(".lease*"))


def test_a_lease_of_a_dead_process_on_this_host_is_broken_at_once(fset):
    proc = os.fork()
    if proc == 0:  # a child that dies at once: its pid is gone
        os._exit(0)
    os.waitpid(proc, 0)
    _plant(fset.path / ".lease.rows-0-4", socket.gethostname(), proc, age_s=0)
    with fset.writer(rows=(0, 4)) as w:
        w.write_rows([2], np.ones((1, 1, 2)))


def test_a_holder_whose_lease_was_taken_over_stops_writing(fset):
    with fset.writer() as w:
        w.write_rows([0], np.ones((1, 1, 2)))
        _plant(fset.path / ".lease", "node-3", 99, age_s=0)  # broken as stale and taken by another node
        with pytest.raises(E.StoreLocked, match="taken over"):
            w.write_rows([1], np.ones((1, 1, 2)))
    assert (fset.path / ".lease").is_file()  # the other holder's lease is left alone
    np.testing.assert_array_equal(np.flatnonzero(fset.done()), [0])


def test_a_heartbeat_renews_the_lease_by_the_servers_clock(fset):
    lease = _lease.Lease(fset.path / ".lease")
    assert lease.try_acquire()
    try:
        now = _lease.server_now(fset.path)
        os.utime(lease.path, (now - 50, now - 50))
        lease.beat()
        assert lease.path.stat().st_mtime >= now and lease.check()
    finally:
        lease.release()
    assert not lease.path.exists()


def test_the_append_lock_is_a_lease_too(fset):
    store = fset.store
    with _lock.FileLock(store.path / ".append.lock") as held:
        assert held and (store.path / ".append.lock.lease").is_file()
        with _lock.FileLock(store.path / ".append.lock", blocking=False) as other:
            assert not other
    store.append_videos(pd.DataFrame({"id": ["w0"], "path": "x", "split": "train"}))
    assert store.n_videos == 9 and not (store.path / ".append.lock.lease").exists()


def test_sigkill_of_a_lease_holder_does_not_block_the_next_writer(fset):
    pid = os.fork()
    if pid == 0:
        try:
            w = fset.writer()
            w.__enter__()
            os.kill(os.getpid(), signal.SIGKILL)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    assert json.loads((fset.path / ".lease").read_text())["pid"] == pid
    with fset.writer() as w:
        w.write_rows([3], np.ones((1, 1, 2)))
