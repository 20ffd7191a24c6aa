"""store.export to npy / h5 / parquet: layouts, streaming resume, prediction runs, one-line errors."""

import csv
import json

import h5py
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from store import FeatureSetSpec, FeatureStore
from store import _export_formats as formats
from store._exchange import decode_id, encode_id
from store.export import main as export_main

CLASSES = ["cat", "dog", "bird"]
IDS = ["v0", "a/b c", ".hidden", "x%y", "ünï", "v5", "v6", "v7", "v8", "v9", "v10"]
NOT_DONE = {6}  # never written
ERRORED = {9}  # written as an error
K, D, CHUNK = 5, 6, 4


def _build(path):
    """11 videos, chunks of 4 rows, varying valid clips (0..K), odd ids, one row not done, one error."""
    fs = FeatureStore.create(path, classes=CLASSES)
    labels = [[i % 3] + ([2] if i % 4 == 0 else []) for i in range(len(IDS))]
    fs.append_videos(pd.DataFrame({"id": IDS, "path": [f"videos/{i}.mp4" for i in range(len(IDS))],
                                   "split": ["train", "val"] * 5 + ["test"]}), labels)
    fset = fs.create_feature_set("rgb", FeatureSetSpec(clips=K, dim=D, chunk_rows=CHUNK, backbone="toy"))
    rng = np.random.default_rng(0)
    data = rng.standard_normal((len(IDS), K, D)).astype(np.float16).astype(np.float32)
    n_valid = np.array([K, 3, 1, K, 2, 0, K, 4, K, K, 3])
    valid = np.arange(K)[None, :] < n_valid[:, None]  # (N, K)
    data[~valid] = 0
    times = np.stack([np.arange(K) * 0.5, np.arange(K) * 0.5 + 1.0], -1).astype(np.float32)
    times = np.broadcast_to(times, (len(IDS), K, 2)).copy()
    times[4] = np.nan  # a video without times
    rows = [r for r in range(len(IDS)) if r not in NOT_DONE | ERRORED]
    with fset.writer() as w:
        w.write_rows(rows, data[rows], valid=valid[rows], times=times[rows])
        w.write_errors(sorted(ERRORED), ["corrupt"])
    return fs, data, valid, times


@pytest.fixture
def store(tmp_path):
    return _build(tmp_path / "s.zarr")


def _done_rows():
    return [r for r in range(len(IDS)) if r not in NOT_DONE | ERRORED]


def _exported(fmt, out):
    """id -> (features (K_valid, D), times or None), read back with plain numpy / h5py / pyarrow."""
    if fmt == "npy":
        got = {}
        for x in csv.DictReader(open(out / "index.csv")):
            tf = out / x["file"].replace(".npy", "_times.npy")
            got[x["id"]] = (np.load(out / x["file"]), np.load(tf) if tf.exists() else None)
        return got
    if fmt == "h5":
        with h5py.File(out) as f:
            return {g.attrs["id"]: (g["features"][()], g["times"][()] if "times" in g else None) for g in f.values()}
    t = pq.read_table(out).to_pandas()
    return {vid: (np.stack(part["features"].to_numpy()), part[["start", "end"]].to_numpy())
            for vid, part in t.groupby("id", sort=False)}


def _expected(fmt, data, valid, times):
    want = {}
    for r in _done_rows():
        if fmt == "parquet" and not valid[r].any():
            continue  # no clip, no row
        t = times[r][valid[r]]
        want[IDS[r]] = (data[r][valid[r]], None if fmt != "parquet" and np.isnan(t).all() else t)
    return want


def _assert_same(got, want):
    assert sorted(got) == sorted(want)
    for vid, (feats, t) in want.items():
        np.testing.assert_array_equal(got[vid][0], feats)
        if t is None:
            assert got[vid][1] is None or not len(got[vid][1])
        else:
            np.testing.assert_array_equal(got[vid][1], t)


def test_id_encoding_is_reversible_and_safe():
    for vid in IDS + ["..", ".", "a/../b", "%2F"]:
        name = encode_id(vid)
        assert decode_id(name) == vid and "/" not in name and not name.startswith(".")


def test_npy_export_one_file_per_video_with_times_and_index(store, tmp_path, capsys):
    fs, data, valid, times = store
    assert export_main([str(fs.path), "--to", "npy", str(tmp_path / "out")]) == 0
    assert "2 videos without features skipped" in capsys.readouterr().out
    out = tmp_path / "out"
    for r, vid in enumerate(IDS):
        f = out / f"{encode_id(vid)}.npy"
        if r in NOT_DONE | ERRORED:
            assert not f.exists()
            continue
        arr = np.load(f)
        assert arr.shape == (int(valid[r].sum()), D) and arr.dtype == np.float16
        np.testing.assert_array_equal(arr, data[r][valid[r]])
        tf = out / f"{encode_id(vid)}_times.npy"
        assert tf.exists() == (r != 4 and valid[r].any())
        if tf.exists():
            np.testing.assert_array_equal(np.load(tf), times[r][valid[r]])
    index = list(csv.DictReader(open(out / "index.csv")))
    assert [x["id"] for x in index] == [IDS[r] for r in _done_rows()]
    assert index[1] == {"id": "a/b c", "path": "videos/1.mp4", "split": "val", "labels": "dog",
                        "file": "a%2Fb%20c.npy", "n_clips": "3"}
    assert json.load(open(out / "attrs.json"))["set_attrs"]["spec"]["backbone"] == "toy"
    assert not (out / ".export-progress.json").exists()


def test_h5_layout(store, tmp_path):
    fs, data, valid, times = store
    export_main([str(fs.path), "--to", "h5", str(tmp_path / "o.h5")])
    with h5py.File(tmp_path / "o.h5") as f:
        assert json.loads(f.attrs["classes"]) == CLASSES
        assert sorted(f.keys()) == sorted(encode_id(IDS[r]) for r in _done_rows())
        g = f[encode_id("a/b c")]
        assert g.attrs["id"] == "a/b c" and g.attrs["row"] == 1
        np.testing.assert_array_equal(g["features"][()], data[1][valid[1]])
        np.testing.assert_array_equal(g["times"][()], times[1][valid[1]])
        assert "times" not in f["%C3%BCn%C3%AF"] and f["v5"]["features"].shape == (0, D)


def test_parquet_one_row_per_clip_in_row_groups(store, tmp_path):
    fs, data, valid, times = store
    out = tmp_path / "o.parquet"
    assert export_main([str(fs.path), "--to", "parquet", str(out)]) == 0
    pf = pq.ParquetFile(out)
    assert pf.num_row_groups == 3  # one per storage chunk holding a done row
    t = pf.read().to_pandas()
    rows = [(IDS[r], k) for r in _done_rows() for k in np.flatnonzero(valid[r])]
    assert list(zip(t["id"], t["clip"])) == rows
    feats = np.stack(t["features"].to_numpy())  # (clips, D) float32
    np.testing.assert_array_equal(feats, np.stack([data[r, k] for r in _done_rows() for k in np.flatnonzero(valid[r])]))
    np.testing.assert_array_equal(t["start"].to_numpy(), [times[r, k, 0] for r in _done_rows()
                                                          for k in np.flatnonzero(valid[r])])
    assert json.loads(pf.schema_arrow.metadata[b"videofeat"])["feature_set"] == "rgb"
    assert not out.with_name("o.parquet.parts").exists()


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("fmt", ["npy", "h5", "parquet"])
def test_interrupted_export_resumes_without_redoing_finished_chunks(store, tmp_path, monkeypatch, fmt):
    fs, data, valid, times = store
    out = tmp_path / {"npy": "out", "h5": "o.h5", "parquet": "o.parquet"}[fmt]
    cls = formats.WRITERS[fmt]
    real = cls.write
    calls = []

    def crash_on_third(self, block):
        calls.append(block.chunk)
        if len(calls) == 3:
            raise _Crash
        return real(self, block)

    monkeypatch.setattr(cls, "write", crash_on_third)
    with pytest.raises(_Crash):
        export_main([str(fs.path), "--to", fmt, str(out)])
    if fmt != "npy":
        assert not out.exists()  # nothing looks finished
    calls.clear()
    monkeypatch.setattr(cls, "write", lambda self, block: calls.append(block.chunk) or real(self, block))
    assert export_main([str(fs.path), "--to", fmt, str(out)]) == 0
    assert calls == [2]  # chunks 0 and 1 were finished by the first run
    _assert_same(_exported(fmt, out), _expected(fmt, data, valid, times))


def test_export_mistakes_are_one_line(store, tmp_path, capsys):
    fs, *_ = store
    assert export_main([str(fs.path), "--to", "npy", str(tmp_path / "o"), "--features", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no feature set 'nope'") and "rgb" in err and err.count("\n") == 1
    fs.create_feature_set("flow", FeatureSetSpec(clips=2, dim=3))
    assert export_main([str(fs.path), "--to", "npy", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {fs.path} holds 2 feature sets (flow, rgb); choose one with --features\n"
    assert not (tmp_path / "o").exists()
    assert export_main([str(fs.path), "--to", "h5", str(tmp_path / "o.h5"), "--run", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: no prediction run 'nope'")
    (tmp_path / "file").touch()
    assert export_main([str(fs.path), "--to", "npy", str(tmp_path / "file"), "--features", "rgb"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'file'} is a file; --to npy writes a folder\n"
    assert export_main([str(fs.path), "--to", "parquet", str(tmp_path), "--features", "rgb"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path} is a folder; --to parquet writes one file\n"


def test_run_export(store, tmp_path):
    fs, *_ = store
    scores = np.random.default_rng(1).random((len(IDS), 3)).astype(np.float32)
    fs.write_predictions("r1", scores, {"head": "mlp"})
    export_main([str(fs.path), "--to", "npy", str(tmp_path / "o"), "--run", "r1"])
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "scores.npy"), scores)
    assert [x["id"] for x in csv.DictReader(open(tmp_path / "o" / "index.csv"))] == IDS
    export_main([str(fs.path), "--to", "h5", str(tmp_path / "o.h5"), "--run", "r1"])
    with h5py.File(tmp_path / "o.h5") as f:
        np.testing.assert_array_equal(f["scores"][()], scores)
        assert [x.decode() for x in f["ids"][()]] == IDS
        assert json.loads(f.attrs["run_attrs"]) == {"head": "mlp"}
    export_main([str(fs.path), "--to", "parquet", str(tmp_path / "o.parquet"), "--run", "r1"])
    t = pq.read_table(tmp_path / "o.parquet").to_pandas()
    np.testing.assert_array_equal(np.stack(t["scores"].to_numpy()), scores)


def test_progress_record_of_another_source_is_refused(store, tmp_path, monkeypatch, capsys):
    fs, data, valid, times = store
    real = formats.NpyWriter.write

    def crash_on_second(self, block):
        if block.chunk == 1:
            raise _Crash
        return real(self, block)

    monkeypatch.setattr(formats.NpyWriter, "write", crash_on_second)
    with pytest.raises(_Crash):
        export_main([str(fs.path), "--to", "npy", str(tmp_path / "out")])
    monkeypatch.setattr(formats.NpyWriter, "write", real)
    capsys.readouterr()
    with fs.feature_set("rgb").writer() as w:  # the set changes: row 6 is extracted meanwhile
        w.write_rows([6], data[[6]], valid=valid[[6]])
    assert export_main([str(fs.path), "--to", "npy", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'out' / '.export-progress.json'} "
                          "records an export of another source (differs in: done)")
    assert err.count("\n") == 1 and not (tmp_path / "out" / "index.csv").exists()
