"""store.import: npy folders (video_features style) and HDF5 back into feature sets, checks, resume."""

import importlib

import h5py
import numpy as np
import pandas as pd
import pytest

from store import FeatureStore
from store import feature_import as fi
from store.export import main as export_main
from store.index import IndexSpec, ensure_index
from store.search import neighbours
from tests.store.test_export import ERRORED, IDS, NOT_DONE, D, _build

import_main = importlib.import_module("store.import").main


@pytest.fixture
def store(tmp_path):
    return _build(tmp_path / "s.zarr")


def _same_set(fs, name, data, valid, times, absent=NOT_DONE | ERRORED):
    """The imported set holds each done row's valid clips (first slots), their times, done flags."""
    fset = fs.feature_set(name)
    got, gvalid = fset.read(dtype=None)
    gtimes = fset.read_times()
    for r in range(len(IDS)):
        if r in absent:
            assert not fset.done()[r] and not gvalid[r].any()
            continue
        k = int(valid[r].sum())
        assert fset.done()[r] and gvalid[r].sum() == k and gvalid[r, :k].all()
        np.testing.assert_array_equal(got[r, :k], data[r][valid[r]].astype(np.float16))  # exact
        np.testing.assert_array_equal(gtimes[r, :k], times[r][valid[r]])
    assert fset.spec.dtype == "float16" and fset.spec.dim == D


@pytest.mark.parametrize("fmt", ["npy", "h5", "parquet"])
def test_export_import_round_trip_is_exact(store, tmp_path, fmt):
    fs, data, valid, times = store
    out = tmp_path / {"npy": "out", "h5": "out.h5", "parquet": "out.parquet"}[fmt]
    assert export_main([str(fs.path), "--to", fmt, str(out), "--features", "rgb"]) == 0
    assert import_main([str(fs.path), "--from", fmt, str(out), "--features", "back", "--allow-missing"]) == 0
    fs = FeatureStore.open(fs.path)
    no_row = {5} if fmt == "parquet" else set()  # parquet: a video without valid clips has no row
    _same_set(fs, "back", data, valid, times, NOT_DONE | ERRORED | no_row)
    fset = fs.feature_set("back")
    assert fset.spec.backbone == "toy" and fset.spec.extra["imported_from"]["format"] == fmt
    assert fset.spec.extra["imported_from"]["path"] == str(out.resolve())
    assert fset.spec.extra["imported_from"]["attrs"]["feature_set"] == "rgb"
    record = fset.attrs["import"]
    assert record["missing"] == 2 + len(no_row)
    assert sorted(record["missing_ids"]) == sorted(IDS[r] for r in NOT_DONE | ERRORED | no_row)
    assert record["finished"] >= record["started"]
    # kNN runs on the imported set: a video with all clips is its own nearest neighbour in a copy
    index = ensure_index(fs.feature_set("back"), IndexSpec(kind="flat"))
    got = neighbours(fs, "back", vectors=fs.feature_set("rgb").read([0])[0].mean(1), k=1, index=index)
    assert got.rows[0, 0] == 0


def test_ids_from_maps_other_file_names(store, tmp_path):
    fs, data, valid, times = store
    export_main([str(fs.path), "--to", "npy", str(tmp_path / "out")])
    index = pd.read_csv(tmp_path / "out" / "index.csv", dtype=str, keep_default_na=False)
    for i, f in enumerate(index["file"]):  # rename every file to clip_<n>.npy
        (tmp_path / "out" / f).rename(tmp_path / "out" / f"clip_{i}.npy")
    index["file"] = [f"clip_{i}.npy" for i in range(len(index))]
    index.to_csv(tmp_path / "map.csv", index=False)
    assert import_main([str(fs.path), "--from", "npy", str(tmp_path / "out"), "--features", "back",
                        "--ids-from", str(tmp_path / "map.csv"), "--allow-missing"]) == 0
    fset = FeatureStore.open(fs.path).feature_set("back")
    got, gvalid = fset.read(dtype=None)
    for r in [r for r in range(len(IDS)) if r not in NOT_DONE | ERRORED]:
        k = int(valid[r].sum())
        np.testing.assert_array_equal(got[r, :k], data[r][valid[r]])
        assert gvalid[r].sum() == k


def _video_features_folder(path, ks, dim=4):
    """video_features style: NAME_rgb.npy (K, D) float32, NAME_fps.npy, NAME_timestamps_ms.npy."""
    path.mkdir()
    rng = np.random.default_rng(3)
    feats = {}
    for i, k in enumerate(ks):
        f = rng.standard_normal((k, dim)).astype(np.float32) if k else rng.standard_normal(dim).astype(np.float32)
        np.save(path / f"v{i}_rgb.npy", f)
        np.save(path / f"v{i}_fps.npy", np.array(25.0))
        np.save(path / f"v{i}_timestamps_ms.npy", np.arange(max(k, 1)) * 640.0)
        feats[f"v{i}"] = f.reshape(-1, dim)
    return feats


def _plain_store(path, n):
    fs = FeatureStore.create(path, classes=["a", "b"])
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(n)], "path": [f"v{i}.mp4" for i in range(n)]}))
    return fs


def test_video_features_folder_with_suffix_and_varying_k(tmp_path):
    fs = _plain_store(tmp_path / "s.zarr", 4)
    feats = _video_features_folder(tmp_path / "vf", [3, 7, 0, 1])  # 0: a (D,) file
    assert import_main([str(fs.path), "--from", "npy", str(tmp_path / "vf"), "--features", "i3d",
                        "--suffix", "_rgb", "--modality", "rgb", "--backbone", "i3d"]) == 0
    fset = FeatureStore.open(fs.path).feature_set("i3d")
    assert (fset.spec.clips, fset.spec.dim, fset.spec.modality, fset.spec.backbone) == (7, 4, "rgb", "i3d")
    got, valid = fset.read(dtype=None)
    for r in range(4):
        f = feats[f"v{r}"]
        np.testing.assert_array_equal(valid[r], np.arange(7) < len(f))
        np.testing.assert_array_equal(got[r, : len(f)], f.astype(np.float16))
        assert not got[r, len(f):].any()
    assert fset.done().all() and np.isnan(fset.read_times()).all()


@pytest.mark.parametrize("case", ["unknown_id", "bad_dim", "missing", "too_many_clips", "not_npy", "bad_times"])
def test_import_mistakes_are_one_line_naming_the_file(tmp_path, capsys, case):
    fs = _plain_store(tmp_path / "s.zarr", 3)
    src = tmp_path / "in"
    _video_features_folder(src, [2, 3, 2])
    args = [str(fs.path), "--from", "npy", str(src), "--features", "x", "--suffix", "_rgb"]
    if case == "unknown_id":
        np.save(src / "zz_rgb.npy", np.zeros((2, 4), np.float32))
        want = f"error: {src / 'zz_rgb.npy'}: video id 'zz' is not in"
    elif case == "bad_dim":
        np.save(src / "v1_rgb.npy", np.zeros((2, 5), np.float32))
        want = f"error: {src / 'v1_rgb.npy'}: D=5, but {src / 'v0_rgb.npy'} has D=4"
    elif case == "missing":
        (src / "v1_rgb.npy").unlink()
        want = f"error: no features for video 'v1' (expected {src / 'v1_rgb.npy'}"
    elif case == "too_many_clips":
        args += ["--max-clips", "2"]
        want = f"error: {src / 'v1_rgb.npy'}: 3 clips, more than --max-clips 2"
    elif case == "not_npy":
        (src / "v2_rgb.npy").write_text("not numpy")
        want = f"error: {src / 'v2_rgb.npy'}: not a readable .npy file"
    else:
        np.save(src / "v0_times.npy", np.zeros((3, 2), np.float32))
        want = f"error: {src / 'v0_times.npy'}: times must have shape (2, 2)"
    assert import_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(want) and err.count("\n") == 1, err
    assert FeatureStore.open(fs.path).feature_sets() == []  # nothing written


def test_allow_missing_skips_and_records(tmp_path):
    fs = _plain_store(tmp_path / "s.zarr", 3)
    src = tmp_path / "in"
    _video_features_folder(src, [2, 3, 2])
    (src / "v1_rgb.npy").unlink()
    np.save(src / "zz_rgb.npy", np.zeros((2, 4), np.float32))
    assert import_main([str(fs.path), "--from", "npy", str(src), "--features", "x", "--suffix", "_rgb",
                        "--allow-missing"]) == 0
    fset = FeatureStore.open(fs.path).feature_set("x")
    np.testing.assert_array_equal(fset.done(), [True, False, True])
    record = fset.attrs["import"]
    assert (record["missing"], record["missing_ids"], record["unknown"]) == (1, ["v1"], 1)
    assert record["unknown_inputs"] == [str(src / "zz_rgb.npy")]


def test_h5_datasets_at_root(tmp_path):
    fs = _plain_store(tmp_path / "s.zarr", 3)
    rng = np.random.default_rng(0)
    feats = {f"v{i}": rng.standard_normal((i + 1, 4)).astype(np.float16) for i in range(3)}
    with h5py.File(tmp_path / "f.h5", "w") as f:
        for k, v in feats.items():
            f[k] = v
        f.attrs["model"] = "clip"
    assert import_main([str(fs.path), "--from", "h5", str(tmp_path / "f.h5"), "--features", "c"]) == 0
    fset = FeatureStore.open(fs.path).feature_set("c")
    got, valid = fset.read(dtype=None)
    for i in range(3):
        np.testing.assert_array_equal(got[i, : i + 1], feats[f"v{i}"])
        assert valid[i].sum() == i + 1
    assert fset.spec.extra["imported_from"]["attrs"] == {"model": "clip"}


def test_interrupted_import_resumes(store, tmp_path, monkeypatch):
    fs, data, valid, times = store
    export_main([str(fs.path), "--to", "h5", str(tmp_path / "o.h5")])
    real, reads = fi.Entry.read, []

    def crash_after_five(self):
        reads.append(self.video_id)
        if len(reads) > 5:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(fi.Entry, "read", crash_after_five)
    args = [str(fs.path), "--from", "h5", str(tmp_path / "o.h5"), "--features", "back", "--allow-missing",
            "--chunk-rows", "4"]
    with pytest.raises(KeyboardInterrupt):
        import_main(args)
    assert FeatureStore.open(fs.path).feature_set("back").done().sum() == 4  # the first chunk
    reads.clear()
    monkeypatch.setattr(fi.Entry, "read", lambda self: reads.append(self.video_id) or real(self))
    assert import_main(args) == 0
    assert len(reads) == 5  # only the rows not done
    _same_set(FeatureStore.open(fs.path), "back", data, valid, times)


def test_parquet_of_another_tool_rows_interleaved_across_row_groups(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = _plain_store(tmp_path / "s.zarr", 3)
    rng = np.random.default_rng(4)
    feats = {f"v{i}": rng.standard_normal((i + 2, 4)).astype(np.float32) for i in range(3)}
    rows = [(vid, f) for vid, arr in feats.items() for f in arr]
    order = rng.permutation(len(rows))  # videos interleaved; no clip column: file order is clip order
    rows = [rows[i] for i in sorted(order[:4])] + [rows[i] for i in sorted(order[4:])]
    table = pa.table({"id": [r[0] for r in rows], "features": [r[1].tolist() for r in rows]})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=4)
    assert import_main([str(fs.path), "--from", "parquet", str(tmp_path / "x.parquet"), "--features", "p",
                        "--dtype", "float32"]) == 0
    got, valid = FeatureStore.open(fs.path).feature_set("p").read(dtype=None)
    for i, (vid, arr) in enumerate(feats.items()):
        want = np.stack([f for v, f in rows if v == vid])  # file order
        np.testing.assert_array_equal(got[i, : len(arr)], want)
        assert valid[i].sum() == len(arr)


def test_values_beyond_float16_stop_at_the_file_and_float32_keeps_them(tmp_path, capsys):
    fs = _plain_store(tmp_path / "s.zarr", 3)
    src = tmp_path / "in"
    _video_features_folder(src, [2, 3, 2])
    np.save(src / "v2_rgb.npy", np.full((2, 4), 1e6, np.float32))
    args = [str(fs.path), "--from", "npy", str(src), "--features", "x", "--suffix", "_rgb", "--chunk-rows", "1"]
    assert import_main(args) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith(f"error: {src / 'v2_rgb.npy'}: NaN or inf (after casting to float16)")
    np.testing.assert_array_equal(FeatureStore.open(fs.path).feature_set("x").done(), [True, True, False])
    assert import_main(args[:4] + ["--features", "y", "--suffix", "_rgb", "--dtype", "float32"]) == 0
    assert FeatureStore.open(fs.path).feature_set("y").read([2])[0].max() == 1e6
