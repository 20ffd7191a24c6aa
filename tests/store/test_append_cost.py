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
