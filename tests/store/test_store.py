"""Round trips, appends and every user mistake of the store API."""

import numpy as np
import pandas as pd
import pytest

from store import FeatureSetSpec, FeatureStore
from store import errors as E

CLASSES = ["cat", "dog", "bird", "fish"]


def _table(ids, split="train"):
    return pd.DataFrame({"id": ids, "path": [f"videos/{i}.mp4" for i in ids], "split": split,
                         "n_frames": 75, "fps": 25.0, "duration": 3.0, "has_audio": True})


@pytest.fixture
def store(tmp_path):
    fs = FeatureStore.create(tmp_path / "s.zarr", classes=CLASSES)
    fs.append_videos(_table([f"v{i}" for i in range(10)]), [["cat"], ["dog", "bird"], [3], [0, 1]] + [["fish"]] * 6)
    return fs


def test_videos_and_labels_round_trip(store, tmp_path):
    fs = FeatureStore.open(tmp_path / "s.zarr")
    assert fs.n_videos == 10 and fs.classes == CLASSES
    v = fs.videos()
    assert list(v["id"]) == [f"v{i}" for i in range(10)]
    assert v["n_frames"].dtype == np.int64 and v["has_audio"].all()
    lab = fs.labels()
    assert lab.dtype == np.uint8 and lab.shape == (10, 4)
    np.testing.assert_array_equal(lab[:4], [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]])
    np.testing.assert_array_equal(fs.labels([3, 1]), lab[[3, 1]])
    np.testing.assert_array_equal(fs.rows_of(["v3", "v0"]), [3, 0])


def test_multi_hot_matrix_and_append_grows_every_array(store):
    fset = store.create_feature_set("f", FeatureSetSpec(clips=3, dim=5, chunk_rows=4))
    m = np.zeros((3, 4), np.uint8)
    m[:, 2] = 1
    rows = store.append_videos(_table(["a", "b", "c"], "val"), m)
    np.testing.assert_array_equal(rows, [10, 11, 12])
    assert store.n_videos == 13
    np.testing.assert_array_equal(store.labels()[10:, 2], 1)
    for name, arr in store.feature_set("f").arrays.items():
        assert arr.shape[0] == 13, name
    np.testing.assert_array_equal(store.split_rows("val"), [10, 11, 12])
    assert fset.n_rows == 13


def test_a_feature_set_held_across_an_append_writes_the_new_rows(store, tmp_path):
    """The FeatureSet object made before the append must not drop writes past its old shape."""
    fset = store.create_feature_set("f", FeatureSetSpec(clips=2, dim=3, chunk_rows=4))
    assert fset.arrays["data"].shape[0] == 10
    store.append_videos(_table(["a", "b"]))
    data = np.arange(12, dtype=np.float32).reshape(2, 2, 3) + 1
    with fset.writer() as w:
        w.write_rows([10, 11], data)
    np.testing.assert_array_equal(np.flatnonzero(fset.done()), [10, 11])
    reread = FeatureStore.open(tmp_path / "s.zarr").feature_set("f")
    np.testing.assert_array_equal(np.flatnonzero(reread.done()), [10, 11])
    np.testing.assert_array_equal(reread.read([10, 11])[0], data)


def test_feature_round_trip_with_masks_times_and_errors(store):
    rng = np.random.default_rng(0)
    fset = store.create_feature_set("f", FeatureSetSpec(clips=3, dim=5, chunk_rows=4, backbone="b"))
    data = rng.standard_normal((10, 3, 5)).astype(np.float32)
    valid = rng.random((10, 3)) > 0.3
    times = rng.random((10, 3, 2)).astype(np.float32)
    rows = np.array([7, 2, 9, 0, 4, 5])  # unordered, spans chunks
    with fset.writer() as w:
        w.write_rows(rows, data[rows], valid=valid[rows], times=times[rows])
        w.write_errors([1, 3], ["corrupt file", "no video stream"])
    got, gvalid = store.feature_set("f").read()
    done = np.zeros(10, bool)
    done[rows] = True
    np.testing.assert_array_equal(fset.done(), done)
    np.testing.assert_allclose(got[done], data[done].astype(np.float16).astype(np.float32))
    assert (got[~done] == 0).all() and not gvalid[~done].any()
    np.testing.assert_array_equal(gvalid[done], valid[done])
    np.testing.assert_allclose(fset.read_times(rows), times[rows])
    assert fset.errors() == {1: "corrupt file", 3: "no video stream"}
    np.testing.assert_array_equal(fset.pending(), [6, 8])
    np.testing.assert_array_equal(fset.pending(retry_errors=True), [1, 3, 6, 8])
    d2, _ = fset.read([9, 2, 9])
    np.testing.assert_array_equal(d2, got[[9, 2, 9]])
    # a later successful write clears the error
    with fset.writer() as w:
        w.write_rows([1], data[[1]])
    assert 1 not in fset.errors() and fset.done()[1]


def test_dask_reader_matches_numpy(store):
    fset = store.create_feature_set("f", FeatureSetSpec(clips=2, dim=3, chunk_rows=4))
    data = np.arange(60, dtype=np.float32).reshape(10, 2, 3)
    with fset.writer() as w:
        w.write_rows(np.arange(10), data)
    d, v, done = fset.to_dask()
    assert d.chunks[0] == (4, 4, 2)
    np.testing.assert_array_equal(d.compute().astype(np.float32), fset.read()[0])
    assert done.compute().all() and v.compute().all()


def test_predictions_round_trip_and_replace(store):
    s = np.random.default_rng(1).random((10, 4)).astype(np.float32)
    store.write_predictions("run1", s, {"head": "netvlad", "metrics": {"class_map": 0.5}},
                            fold=np.arange(10) % 3)
    got, attrs = FeatureStore.open(store.path).read_predictions("run1")
    np.testing.assert_array_equal(got, s)
    assert attrs["head"] == "netvlad"
    np.testing.assert_array_equal(store.read_prediction_folds("run1"), np.arange(10) % 3)
    assert store.prediction_attrs("run1") == attrs and store.prediction_rows("run1") == 10
    store.write_predictions("run1", s * 0, {"head": "mean"})
    assert store.read_predictions("run1")[1]["head"] == "mean" and store.prediction_runs() == ["run1"]


def test_create_feature_set_is_idempotent_but_refuses_a_different_spec(store):
    spec = FeatureSetSpec(clips=2, dim=3, backbone="r2plus1d_18")
    a = store.create_feature_set("f", spec)
    assert store.create_feature_set("f", spec).spec == a.spec
    with pytest.raises(E.FeatureSetExists, match="differs in: backbone"):
        store.create_feature_set("f", FeatureSetSpec(clips=2, dim=3, backbone="r3d_18"))


@pytest.mark.parametrize("mistake, error, match", [
    (lambda fs: FeatureStore.open(fs.path.parent / "missing.zarr"), E.StoreNotFound, "no feature store"),
    (lambda fs: FeatureStore.create(fs.path, classes=CLASSES), E.StoreExists, "already exists"),
    (lambda fs: FeatureStore.create(fs.path.parent / "x.zarr", classes=["a", "a"]), E.ClassMismatch, "unique"),
    (lambda fs: FeatureStore.open(fs.path, classes=["cat", "dog"]), E.ClassMismatch, "class list differs"),
    (lambda fs: fs.append_videos(_table(["v1"]), [["cat"]]), E.DuplicateVideoId, "already in the store"),
    (lambda fs: fs.append_videos(_table(["n1", "n1"]), [["cat"], ["dog"]]), E.DuplicateVideoId, "twice"),
    (lambda fs: fs.append_videos(_table(["n1"]), [["horse"]]), E.ClassMismatch, "unknown label 'horse'"),
    (lambda fs: fs.append_videos(_table(["n1"]), [[7]]), E.ClassMismatch, "outside 0..3"),
    (lambda fs: fs.append_videos(_table(["n1"]), np.ones((1, 3))), E.ClassMismatch, "shape"),
    (lambda fs: fs.append_videos(pd.DataFrame({"id": ["x"]})), E.SchemaMismatch, "'id' and 'path'"),
    (lambda fs: fs.append_videos(_table(["n1"]).assign(extra=1), None), E.SchemaMismatch, "column 'extra'"),
    (lambda fs: fs.feature_set("nope"), E.FeatureSetNotFound, "no feature set 'nope'"),
    (lambda fs: fs.read_predictions("nope"), E.PredictionRunNotFound, "no prediction run"),
    (lambda fs: fs.rows_of(["nope"]), E.VideoNotFound, "no video with id 'nope'"),
    (lambda fs: fs.write_predictions("r", np.zeros((10, 3))), E.ShapeMismatch, r"\(10, 4\)"),
    (lambda fs: fs.create_feature_set("../bad", FeatureSetSpec(clips=1, dim=1)), E.StoreError, "invalid"),
    (lambda fs: FeatureSetSpec(clips=0, dim=3), E.SchemaMismatch, "clips >= 1"),
    (lambda fs: FeatureSetSpec(clips=1, dim=3, compressor="gzip"), E.SchemaMismatch, "compressor"),
])
def test_user_mistakes_raise_one_clear_error_and_change_nothing(store, mistake, error, match):
    before = (store.n_videos, store.videos().to_dict(), store.labels().tolist(), store.feature_sets())
    with pytest.raises(error, match=match):
        mistake(store)
    fs = FeatureStore.open(store.path)
    assert (fs.n_videos, fs.videos().to_dict(), fs.labels().tolist(), fs.feature_sets()) == before


@pytest.mark.parametrize("write, match", [
    (lambda w: w.write_rows([0], np.zeros((1, 2, 4))), r"shape \(1, 2, 3\)"),
    (lambda w: w.write_rows([0], np.full((1, 2, 3), np.nan)), "non-finite"),
    (lambda w: w.write_rows([0], np.full((1, 2, 3), 1e6)), "non-finite"),  # overflows float16
    (lambda w: w.write_rows([0], np.zeros((1, 2, 3), np.int32)), "floating point"),
    (lambda w: w.write_rows([0, 0], np.zeros((2, 2, 3))), "twice"),
    (lambda w: w.write_rows([10], np.zeros((1, 2, 3))), "rows must lie in 0:10"),
    (lambda w: w.write_rows([0], np.zeros((1, 2, 3)), valid=np.ones((1, 3), bool)), "valid must have shape"),
    (lambda w: w.write_errors([0, 1], ["x"]), "2 rows but 1"),
])
def test_bad_writes_are_refused_and_leave_rows_untouched(store, write, match):
    fset = store.create_feature_set("f", FeatureSetSpec(clips=2, dim=3, chunk_rows=4))
    with fset.writer() as w:
        with pytest.raises(E.ShapeMismatch, match=match):
            write(w)
    assert not fset.done().any() and fset.errors() == {}


def test_read_only_store_refuses_writes(store):
    store.create_feature_set("f", FeatureSetSpec(clips=1, dim=2))
    ro = FeatureStore.open(store.path, "r")
    with pytest.raises(E.ReadOnlyStore):
        ro.append_videos(_table(["z"]))
    with pytest.raises(E.ReadOnlyStore):
        ro.feature_set("f").writer()
    with pytest.raises(E.ReadOnlyStore):
        ro.write_predictions("r", np.zeros((10, 4)))


def test_writer_locks(store):
    fset = store.create_feature_set("f", FeatureSetSpec(clips=1, dim=2, chunk_rows=4))
    with fset.writer():
        with pytest.raises(E.StoreLocked, match="being written"):
            fset.writer().__enter__()
        with pytest.raises(E.StoreLocked):
            fset.writer(rows=(0, 4)).__enter__()
    with fset.writer(rows=(0, 4)) as a, fset.writer(rows=(4, 10)) as b:
        a.write_rows([0, 3], np.ones((2, 1, 2)))
        b.write_rows([9], np.ones((1, 1, 2)))
        with pytest.raises(E.ShapeMismatch, match="rows must lie in 0:4"):
            a.write_rows([4], np.ones((1, 1, 2)))
        with pytest.raises(E.StoreLocked, match="overlap"):
            fset.writer(rows=(0, 8)).__enter__()
        with pytest.raises(E.StoreLocked):
            fset.writer().__enter__()
    with pytest.raises(E.ShapeMismatch, match="not aligned"):
        fset.writer(rows=(2, 6))
    np.testing.assert_array_equal(np.flatnonzero(fset.done()), [0, 3, 9])
    # shard ranges cover every row exactly once and are chunk-aligned
    ranges = [store.shard_range(i, 3, chunk_rows=4) for i in range(3)]
    assert ranges[0][0] == 0 and ranges[-1][1] == 10
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(r[0] % 4 == 0 for r in ranges)


@pytest.mark.parametrize("compressor", ["none", "lz4"])
def test_raw_chunk_reads_equal_zarr_reads(store, compressor):
    fset = store.create_feature_set("f", FeatureSetSpec(clips=3, dim=5, chunk_rows=4, compressor=compressor))
    assert (fset._raw_dir is not None) == (compressor == "none")
    data = np.random.default_rng(2).standard_normal((10, 3, 5))
    with fset.writer() as w:
        w.write_rows(np.arange(0, 4), data[:4])
        w.write_rows([9], data[[9]])  # chunk 1 never written, chunk 2 is the short edge chunk
    for c in range(fset.n_chunks):
        got = fset.read_data_chunk(c)
        np.testing.assert_array_equal(got, fset.arrays["data"][c * 4:min(c * 4 + 4, 10)])
    assert fset.read_data_chunk(2).shape == (2, 3, 5) and (fset.read_data_chunk(1) == 0).all()
    rows = [r for start, d, v in fset.iter_chunks() for r in range(start, start + len(d))]
    assert rows == list(range(10))
    if compressor == "none":
        chunk = fset.path / "data" / "c" / "0" / "0" / "0"
        chunk.write_bytes(chunk.read_bytes()[:10])
        with pytest.raises(E.StoreError, match="damaged"):
            fset.read_data_chunk(0)
