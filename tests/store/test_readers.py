"""The torch chunk-shuffling reader against plain numpy reads of the same rows."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from store import FeatureSetSpec
from store.errors import ShapeMismatch
from store.readers import ChunkShuffleDataset
from store.testing import make_synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    fs = make_synthetic_store(tmp_path_factory.mktemp("r") / "s.zarr", n_videos=300, n_classes=6, clips=4,
                              dim=8, chunk_rows=32, short_fraction=0.3)
    other = fs.create_feature_set("other", FeatureSetSpec(clips=4, dim=3, chunk_rows=32))
    rng = np.random.default_rng(5)
    done_rows = np.flatnonzero(rng.random(300) > 0.2)
    with other.writer() as w:
        w.write_rows(done_rows, rng.random((len(done_rows), 4, 3)), valid=rng.random((len(done_rows), 4)) > 0.2)
    return fs


def _collect(ds):
    parts = {k: [] for k in ("rows", "features", "mask", "labels")}
    for b in ds:
        for k in parts:
            parts[k].append(b[k].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


@pytest.mark.parametrize("in_memory", [False, True])
def test_yields_every_split_row_once_with_the_numpy_values(store, in_memory):
    ds = ChunkShuffleDataset(store, ["synthetic"], split="train", batch_size=17, buffer_chunks=3, seed=1,
                             in_memory=in_memory)
    got = _collect(ds)
    train = store.split_rows("train")
    assert sorted(got["rows"]) == list(train)
    assert not np.array_equal(got["rows"], np.sort(got["rows"])), "rows should be shuffled"
    data, valid = store.feature_set("synthetic").read(got["rows"])
    np.testing.assert_array_equal(got["features"], data)
    np.testing.assert_array_equal(got["mask"], valid)
    np.testing.assert_array_equal(got["labels"], store.labels(got["rows"]).astype(np.float32))
    assert got["features"].dtype == np.float32 and len(ds) == -(-len(train) // 17)


def test_same_seed_same_order_new_epoch_new_order(store):
    a = ChunkShuffleDataset(store, ["synthetic"], batch_size=16, seed=3)
    b = ChunkShuffleDataset(store, ["synthetic"], batch_size=16, seed=3)
    ra, rb = _collect(a)["rows"], _collect(b)["rows"]
    np.testing.assert_array_equal(ra, rb)
    b.set_epoch(1)
    assert not np.array_equal(ra, _collect(b)["rows"])
    c = ChunkShuffleDataset(store, ["synthetic"], batch_size=16, seed=3, shuffle=False)
    np.testing.assert_array_equal(_collect(c)["rows"], store.split_rows("train"))


def test_feature_sets_concatenate_per_clip_over_rows_done_in_both(store):
    ds = ChunkShuffleDataset(store, ["synthetic", "other"], split="all", batch_size=50, seed=0)
    got = _collect(ds)
    both = store.feature_set("synthetic").done() & store.feature_set("other").done()
    assert sorted(got["rows"]) == list(np.flatnonzero(both))
    d1, v1 = store.feature_set("synthetic").read(got["rows"])
    d2, v2 = store.feature_set("other").read(got["rows"])
    np.testing.assert_array_equal(got["features"], np.concatenate([d1, d2], axis=2))
    np.testing.assert_array_equal(got["mask"], v1 & v2)


def test_dataloader_workers_split_chunks_without_overlap(store):
    ds = ChunkShuffleDataset(store.path, ["synthetic"], split="all", batch_size=32, seed=0)
    rows = torch.cat([b["rows"] for b in DataLoader(ds, batch_size=None, num_workers=2)]).numpy()
    assert sorted(rows) == list(range(store.n_videos))


def test_explicit_rows_and_drop_last(store):
    rows = np.arange(0, 300, 3)
    got = _collect(ChunkShuffleDataset(store, ["synthetic"], rows=rows, batch_size=30, drop_last=True))
    assert len(got["rows"]) == 90 and set(got["rows"]) <= set(rows)


def test_mismatched_clip_counts_are_refused(store):
    store.create_feature_set("k2", FeatureSetSpec(clips=2, dim=3, chunk_rows=32))
    with pytest.raises(ShapeMismatch, match="same number of clips"):
        ChunkShuffleDataset(store, ["synthetic", "k2"])
