"""Appending videos costs O(rows appended): the existing rows' chunks are neither read nor rewritten."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from store import FeatureSetSpec, FeatureStore
from store._durable import DurableLocalStore
from store.errors import DuplicateVideoId
from store.feature_store import LABEL_CHUNK
from store.verify import verify_store

N = 2 * LABEL_CHUNK + 100  # labels span three chunks; the last one is partial


def _table(start: int, n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"v{i}" for i in range(start, start + n)], "path": "x", "split": "train"})


@pytest.fixture
def chunk_reads(monkeypatch):
    """Keys of every chunk read through the store (metadata ``zarr.json`` reads left out)."""
    seen: list[str] = []
    original = DurableLocalStore.get

    async def counting_get(self, key, *args, **kwargs):
        if not key.endswith("zarr.json"):
            seen.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(DurableLocalStore, "get", counting_get)
    return seen


def _make(path: Path) -> None:
    fs = FeatureStore.create(path, classes=["a", "b"])
    fs.append_videos(_table(0, N), np.eye(2, dtype=np.uint8)[np.arange(N) % 2])
    fset = fs.create_feature_set("f", FeatureSetSpec(clips=2, dim=4, chunk_rows=256))
    with fset.writer() as w:
        w.write_rows(np.arange(N), np.ones((N, 2, 4), np.float32))


def test_append_reads_only_the_last_partial_chunks_and_the_ids_once(tmp_path, chunk_reads):
    path = tmp_path / "s.zarr"
    _make(path)
    chunk_reads.clear()
    fs = FeatureStore.open(path, "a")
    fs.append_videos(_table(N, 50), np.eye(2, dtype=np.uint8)[np.arange(50) % 2])
    first = set(chunk_reads)
    assert not any(k.startswith("features/") for k in first), first  # data, done, valid...: resized, never read
    assert not {"labels/c/0/0", "labels/c/1/0"} & first, first  # only the partial last label chunk
    assert "videos/id/c/0" in first  # the id index, built once per open
    chunk_reads.clear()
    fs.append_videos(_table(N + 50, 50), None)
    second = set(chunk_reads)
    assert "videos/id/c/0" in second  # the id column's partial chunk is rewritten (read-modify-write) ...
    assert chunk_reads.count("videos/id/c/0") == 1  # ... but not read a second time for the id index
    assert not any(k.startswith("features/") for k in second), second
    assert not {"labels/c/0/0", "labels/c/1/0"} & second, second
    with pytest.raises(DuplicateVideoId, match="v7"):
        fs.append_videos(_table(7, 1), None)
    with pytest.raises(DuplicateVideoId, match=f"v{N + 60}"):
        fs.append_videos(_table(N + 60, 1), None)  # an id appended in this session
    fs = FeatureStore.open(path, "r")
    assert fs.n_videos == N + 100
    assert list(fs.video_ids()[[0, N, N + 99]]) == ["v0", f"v{N}", f"v{N + 99}"]
    assert fs.labels()[N:N + 50].argmax(axis=1).tolist() == (np.arange(50) % 2).tolist()
    assert not fs.feature_set("f").done()[N:].any() and verify_store(path).ok


def _files(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``root`` (relative key) -> (inode, size, mtime ns): a replaced or rewritten file changes."""
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("blocks", [1, 3])
def test_append_and_feature_write_touch_only_the_chunks_of_the_new_rows(tmp_path, chunk_reads, blocks):
    """Opening the store, appending 50 videos and writing their features (twice, in one session)
    creates or rewrites only the chunks that hold the new rows, in every array (videos, labels,
    features/data, valid, times, errors, done), and reads no other chunk but the id column's,
    whatever the number of rows before (``blocks`` x 256-row feature chunks of them)."""
    path = tmp_path / "s.zarr"
    n = 2 * LABEL_CHUNK + 100  # the last label chunk (2) and feature chunk (32) are partial
    fs = FeatureStore.create(path, classes=["a", "b"])
    fs.append_videos(_table(0, n), np.eye(2, dtype=np.uint8)[np.arange(n) % 2])
    fset = fs.create_feature_set("f", FeatureSetSpec(clips=2, dim=4, chunk_rows=256))
    for _ in range(blocks):  # the earlier rows' features, written in several sessions
        with fset.writer() as w:
            w.write_rows(np.arange(n), np.ones((n, 2, 4), np.float32))
    before = _files(path)
    chunk_reads.clear()
    fs = FeatureStore.open(path, "a")
    for start in (n, n + 50):
        rows = fs.append_videos(_table(start, 50), np.eye(2, dtype=np.uint8)[np.arange(50) % 2])
        with fs.feature_set("f").writer() as w:
            w.write_rows(rows, np.full((50, 2, 4), 2.0, np.float32))
    after = _files(path)
    touched = {k for k in after if before.get(k) != after[k] and not k.endswith(("zarr.json", ".lock"))}
    last = (n + 99) // 256  # rows n .. n + 99 lie in feature chunks 32 (partial before) and nothing else
    assert last == n // 256 == 32
    expected = {f"features/f/{a}/c/{last}" + suffix for a, suffix in
                (("data", "/0/0"), ("valid", "/0"), ("times", "/0/0"), ("errors", ""), ("done", ""))}
    expected |= {"labels/c/2/0"} | {f"videos/{c}/c/0" for c in ("id", "path", "split")}
    assert touched <= expected, sorted(touched - expected)  # times and errors hold their fill values: not stored
    assert {f"features/f/data/c/{last}/0/0", f"features/f/done/c/{last}", "labels/c/2/0", "videos/id/c/0"} <= touched
    read_chunks = {k for k in chunk_reads if not k.endswith(".lock")}
    assert {k for k in read_chunks if k.startswith("features/")} <= expected  # only the partial chunk, to merge
    assert {k for k in read_chunks if k.startswith("labels/")} <= {"labels/c/2/0"}
    fs = FeatureStore.open(path, "r")
    assert fs.n_videos == n + 100 and fs.feature_set("f").done().all()
    assert verify_store(path).ok
