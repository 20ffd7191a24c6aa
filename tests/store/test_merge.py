"""python -m store.merge: shards joined by video id, conflicts refused, crash-safe and resumable."""

import numpy as np
import pandas as pd
import pytest

from store import FeatureSetSpec, FeatureStore, FeatureWriter
from store import merge as M
from store.verify import verify_store

CLASSES = ["cat", "dog", "bird"]
SPEC = FeatureSetSpec(clips=2, dim=3, chunk_rows=2, backbone="tiny", modality="rgb")


def _features(ids):
    """Distinct features per id, so that a row copied from the wrong place is seen."""
    base = np.array([sum(map(ord, i)) for i in ids], np.float32)
    return (base[:, None, None] + np.arange(6, dtype=np.float32).reshape(1, 2, 3)) / 8


def _store(path, ids, labels, done, errors=(), spec=SPEC, classes=CLASSES):
    """A store of ``ids`` whose set ``rgb`` has features for ``done`` ids and errors for ``errors``."""
    fs = FeatureStore.create(path, classes=classes)
    fs.append_videos(pd.DataFrame({"id": ids, "path": [f"/data/{i}.mp4" for i in ids], "split": "train"}), labels)
    fset = fs.create_feature_set("rgb", spec)
    with fset.writer() as w:
        rows = fs.rows_of(done)
        times = np.stack([np.zeros((len(done), 2)), np.ones((len(done), 2))], -1).astype(np.float32)
        w.write_rows(rows, _features(done), np.array([[True, False]] * len(done)), times)
        if errors:
            w.write_errors(fs.rows_of(list(errors)), [f"corrupt {e}" for e in errors])
    return path


@pytest.fixture
def shards(tmp_path):
    a = _store(tmp_path / "a.zarr", ["v0", "v1", "v2"], [["cat"], ["dog"], ["bird"]], done=["v0", "v1"], errors=["v2"])
    # v1 again (not done here), v2 again (done here: the failed row of a.zarr is filled from b.zarr), v3 new.
    b = _store(tmp_path / "b.zarr", ["v1", "v2", "v3", "v4"], [["dog"], ["bird"], ["cat", "dog"], []],
               done=["v2", "v3"], errors=["v4"])
    return a, b


def test_merge_joins_by_id_takes_features_where_done_and_verifies(shards, tmp_path):
    out = tmp_path / "all.zarr"
    report = M.merge_stores(out, list(shards))
    assert (report.rows, report.duplicates, report.done, report.errors) == (5, 2, {"rgb": 4}, {"rgb": 1})
    fs = FeatureStore.open(out)
    assert list(fs.video_ids()) == ["v0", "v1", "v2", "v3", "v4"]
    np.testing.assert_array_equal(fs.labels(), [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    fset = fs.feature_set("rgb")
    np.testing.assert_array_equal(fset.done(), [True, True, True, True, False])
    assert fset.errors() == {4: "corrupt v4"}
    data, valid = fset.read(np.arange(4))
    np.testing.assert_array_equal(data, _features(["v0", "v1", "v2", "v3"]).astype(np.float16).astype(np.float32))
    assert valid.tolist() == [[True, False]] * 4
    np.testing.assert_array_equal(fset.read_times(np.arange(4))[:, :, 1], 1)
    assert fset.spec == SPEC and verify_store(out).ok
    assert not (tmp_path / "all.zarr.merging").exists()


def test_conflicting_labels_are_refused_before_anything_is_written(tmp_path, capsys):
    a = _store(tmp_path / "a.zarr", ["v0", "v1"], [["cat"], ["dog"]], done=["v0"])
    b = _store(tmp_path / "b.zarr", ["v1"], [["bird"]], done=["v1"])
    assert M.main([str(tmp_path / "all.zarr"), str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'v1' has different labels" in err
    assert not (tmp_path / "all.zarr").exists() and not (tmp_path / "all.zarr.merging").exists()


@pytest.mark.parametrize("change, match", [
    ({"classes": ["cat", "dog", "fish"]}, "class list differs"),
    ({"spec": FeatureSetSpec(clips=2, dim=3, chunk_rows=2, backbone="other")}, "differs in: backbone"),
])
def test_stores_made_differently_are_refused(tmp_path, capsys, change, match):
    a = _store(tmp_path / "a.zarr", ["v0"], [["cat"]], done=["v0"])
    b = _store(tmp_path / "b.zarr", ["v1"], [["dog"]], done=["v1"], **change)
    assert M.main([str(tmp_path / "all.zarr"), str(a), str(b)]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "all.zarr").exists()


def test_an_existing_output_or_a_repeated_input_is_refused(shards, tmp_path, capsys):
    a, b = shards
    assert M.main([str(a), str(b)]) == 2 and "exists" in capsys.readouterr().err
    assert M.main([str(tmp_path / "x.zarr"), str(a), str(a)]) == 2 and "twice" in capsys.readouterr().err


def test_storage_chunking_may_differ_between_inputs(tmp_path):
    a = _store(tmp_path / "a.zarr", ["v0", "v1", "v2"], [["cat"], ["dog"], ["bird"]], done=["v0", "v1", "v2"])
    wide = FeatureSetSpec(clips=2, dim=3, chunk_rows=4, backbone="tiny", modality="rgb")
    b = _store(tmp_path / "b.zarr", ["v3"], [["cat"]], done=["v3"], spec=wide)
    M.merge_stores(tmp_path / "all.zarr", [a, b])
    data, _ = FeatureStore.open(tmp_path / "all.zarr").feature_set("rgb").read()
    np.testing.assert_array_equal(data, _features(["v0", "v1", "v2", "v3"]).astype(np.float16).astype(np.float32))


def test_an_interrupted_merge_resumes_without_copying_rows_again(shards, tmp_path, monkeypatch):
    out = tmp_path / "all.zarr"
    real, calls = FeatureWriter.write_rows, []

    def crash_on_second_chunk(self, rows, *args, **kwargs):
        calls.append(list(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, rows, *args, **kwargs)

    monkeypatch.setattr(FeatureWriter, "write_rows", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        M.merge_stores(out, list(shards))
    assert not out.exists() and (tmp_path / "all.zarr.merging").is_dir()
    assert verify_store(tmp_path / "all.zarr.merging").ok  # a valid store at every moment
    calls.clear()
    monkeypatch.setattr(FeatureWriter, "write_rows", lambda self, rows, *a, **k: (calls.append(list(rows)),
                                                                                   real(self, rows, *a, **k)))
    report = M.merge_stores(out, list(shards))
    assert report.done == {"rgb": 4}
    assert [0, 1] not in calls  # the first chunk was done before the crash
    data, _ = FeatureStore.open(out).feature_set("rgb").read(np.arange(4))
    np.testing.assert_array_equal(data, _features(["v0", "v1", "v2", "v3"]).astype(np.float16).astype(np.float32))


def test_help_runs():
    with pytest.raises(SystemExit) as exit_:
        M.main(["--help"])
    assert exit_.value.code == 0
