"""python -m store.search: the neighbour table, label votes, and one-line errors (exit 2)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from store import FeatureSetSpec, FeatureStore
from store.search import main, neighbours

CLASSES = ["left", "right", "up"]


@pytest.fixture
def store_path(tmp_path):
    """Six videos in two tight groups; v5 has no features yet."""
    fs = FeatureStore.create(tmp_path / "s.zarr", classes=CLASSES)
    fs.append_videos(
        pd.DataFrame({"id": [f"v{i}" for i in range(6)], "path": [f"{i}.mp4" for i in range(6)]}),
        [["left"], ["left", "up"], ["left"], ["right"], ["right"], ["up"]],
    )
    fset = fs.create_feature_set("rgb", FeatureSetSpec(clips=2, dim=4, backbone="toy"))
    base = np.array([[1, 0, 0, 0]] * 3 + [[0, 1, 0, 0]] * 2, np.float32)
    offsets = np.array([0.0, 0.1, 0.2, 0.0, 0.1], np.float32)[:, None] * np.array(
        [0, 0, 1, 0], np.float32
    )
    offsets[3, 0] = 0.05  # v3 is a little nearer v0 than v4 is: no ties
    with fset.writer() as w:
        w.write_rows(range(5), np.repeat((base + offsets)[:, None, :], 2, axis=1))
    return tmp_path / "s.zarr"


def _run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_query_by_id_prints_neighbours_and_votes(store_path, capsys):
    code, out, _ = _run(
        capsys, "--store", str(store_path), "--features", "rgb", "--id", "v0", "-k", "3"
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("index: Flat over 5 video vectors")
    assert "neighbours of v0 (row 0); its labels: left" in lines[1]
    table = [line.split() for line in lines[3:6]]
    assert [t[:2] for t in table] == [["1", "v1"], ["2", "v2"], ["3", "v3"]]  # v0 itself left out
    cos = [1 / np.sqrt(1.01), 1 / np.sqrt(1.04), 0.05 / np.sqrt(1.0025)]
    np.testing.assert_allclose([float(t[2]) for t in table], cos, atol=1e-3)
    assert table[0][3:] == ["left,", "up"]
    # votes: softmax(cos / 0.1) over v1, v2, v3; 'left' from v1 + v2, 'up' from v1, 'right' from v3
    w = np.exp(np.array(cos) / 0.1)
    w /= w.sum()
    assert lines[6] == (
        f"propagated label scores (T=0.1): left {w[0] + w[1]:.3f}, up {w[0]:.3f}, right {w[2]:.3f}"
    )
    meta = json.loads((store_path / "features" / "rgb" / "index" / "meta.json").read_text())
    assert meta["n_vectors"] == 5  # built on first use, saved beside the set


def test_query_by_vector_and_library_twin(store_path, capsys, tmp_path):
    np.save(tmp_path / "q.npy", np.array([[0, 3, 0, 0]], np.float32))
    code, out, _ = _run(
        capsys,
        "--store",
        str(store_path),
        "--features",
        "rgb",
        "--vector",
        str(tmp_path / "q.npy"),
        "-k",
        "2",
        "--index",
        "flat",
    )
    assert code == 0 and "v3" in out.splitlines()[3] and "v4" in out.splitlines()[4]
    fs = FeatureStore.open(store_path)
    result = neighbours(fs, "rgb", vectors=np.array([[0, 3, 0, 0]], np.float32), k=2)
    np.testing.assert_array_equal(result.rows, [[3, 4]])
    np.testing.assert_allclose(result.scores, [[0, 1, 0]], atol=1e-6)


def test_new_rows_are_added_on_the_next_search(store_path, capsys):
    assert (
        _run(capsys, "--store", str(store_path), "--features", "rgb", "--id", "v0", "-k", "9")[0]
        == 0
    )
    fset = FeatureStore.open(store_path, "a").feature_set("rgb")
    with fset.writer() as w:
        w.write_rows([5], np.array([[[0, 0, 1, 0]] * 2], np.float32))
    code, out, _ = _run(
        capsys, "--store", str(store_path), "--features", "rgb", "--id", "v5", "-k", "9"
    )
    assert code == 0 and "over 6 video vectors" in out and "   1  v2 " in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--features", "flow", "--id", "v0"], "no feature set 'flow'"),
        (["--features", "rgb", "--id", "v99"], "no video with id 'v99'"),
        (["--features", "rgb", "--id", "v5"], "no extracted features"),
        (["--features", "rgb", "--vector", "WRONG_DIM"], "needs (4,)"),
        (["--features", "rgb", "--vector", "MISSING"], "cannot read query vector"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(store_path, capsys, tmp_path, args, message):
    np.save(tmp_path / "wrong.npy", np.ones(5, np.float32))
    paths = {"WRONG_DIM": str(tmp_path / "wrong.npy"), "MISSING": str(tmp_path / "missing.npy")}
    code, out, err = _run(capsys, "--store", str(store_path), *[paths.get(a, a) for a in args])
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_stale_index_needs_rebuild(store_path, capsys):
    assert _run(capsys, "--store", str(store_path), "--features", "rgb", "--id", "v0")[0] == 0
    fs = FeatureStore.open(store_path, "a")
    group = fs.feature_set("rgb").group
    group.attrs["spec"] = dict(group.attrs["spec"], weights_sha256="f00d")  # features re-made
    code, _, err = _run(capsys, "--store", str(store_path), "--features", "rgb", "--id", "v0")
    assert code == 2 and "weights_sha256: None -> 'f00d'" in err and "--rebuild" in err
    assert (
        _run(capsys, "--store", str(store_path), "--features", "rgb", "--id", "v0", "--rebuild")[0]
        == 0
    )


def test_module_entry_point(store_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "store.search",
            "--store",
            str(store_path),
            "--features",
            "rgb",
            "--id",
            "v3",
            "-k",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "   1  v4 " in proc.stdout
