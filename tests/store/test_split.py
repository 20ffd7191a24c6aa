"""``python -m store.split``: exact counts by the stated rounding rule, seeded determinism, splits from
a file, refusals as one line, the crash-safe column swap, and heads.train on a store that had no
splits."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from store import FeatureStore
from store.split import main, split_counts
from store.testing import make_synthetic_store
from store.verify import verify_store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def unsplit(tmp_path):
    fs = make_synthetic_store(tmp_path / "u.zarr", n_videos=37, n_classes=4, clips=2, dim=8, chunk_rows=8)
    fs.set_splits(["unsplit"] * 37)
    return fs


def _splits(path) -> np.ndarray:
    return FeatureStore.open(path).videos(["split"])["split"].to_numpy(dtype=str)


def _one_error_line(capsys, *words):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, err


@pytest.mark.parametrize("n, fractions, expected", [
    (37, (0.7, 0.15, 0.15), (26, 6, 5)),  # 25.9, 5.55, 5.55 -> floors 25, 5, 5; +1 to 0.9, then 0.55 (first)
    (10, (0.7, 0.15, 0.15), (7, 2, 1)),   # 7, 1.5, 1.5 -> one left: the first of the tied remainders
    (3, (1 / 3, 1 / 3, 1 / 3), (1, 1, 1)),
    (5, (0.5, 0.5), (3, 2)),
    (10, (0.7, 0.2, 0.1), (7, 2, 1)),    # the floats sum to 0.9999999999999999: normalised first
    (0, (0.7, 0.3), (0, 0)),
])
def test_split_counts_by_hand(n, fractions, expected):
    assert tuple(split_counts(n, fractions)) == expected


def test_fractions_exact_counts_and_seeded(unsplit, capsys):
    path = str(unsplit.path)
    assert main([path, "--fractions", "0.7,0.15,0.15", "--seed", "3"]) == 0
    assert f"{path}: test 5, train 26, val 6" in capsys.readouterr().out
    first = _splits(path)
    assert [(first == s).sum() for s in ("train", "val", "test")] == [26, 6, 5]
    assert main([path, "--fractions", "0.7,0.15,0.15", "--seed", "3", "--force"]) == 0
    np.testing.assert_array_equal(_splits(path), first)  # same seed, same splits
    assert main([path, "--fractions", "0.7,0.15,0.15", "--seed", "4", "--force"]) == 0
    assert (_splits(path) != first).any()
    assert verify_store(path).ok


def test_existing_splits_need_force(unsplit, capsys):
    path = str(unsplit.path)
    assert main([path, "--fractions", "0.5,0.5", "--names", "train,val"]) == 0
    before = _splits(path)
    capsys.readouterr()
    assert main([path, "--fractions", "0.7,0.15,0.15", "--seed", "1"]) == 2
    _one_error_line(capsys, "--force")
    np.testing.assert_array_equal(_splits(path), before)


def test_from_file_sets_listed_rows_and_refuses_unknown_ids(unsplit, tmp_path, capsys):
    path = str(unsplit.path)
    ids = unsplit.video_ids()
    good = tmp_path / "s.csv"
    good.write_text("\ufeffid,split\r\n" + "".join(f"{i},train\r\n" for i in ids[:30])
                    + f"\r\n{ids[30]},val \r\n{ids[31]},test\r\n")
    bad = tmp_path / "bad.csv"
    bad.write_text(f"id,split\n{ids[0]},train\nnot_a_video,val\nnor_this,val\n")
    assert main([path, "--from-file", str(bad)]) == 2
    _one_error_line(capsys, "bad.csv:3", "2 id(s)", "not_a_video")
    assert (_splits(path) == "unsplit").all()  # nothing written
    assert main([path, "--from-file", str(good)]) == 0
    got = _splits(path)
    assert (got[:30] == "train").all() and got[30] == "val" and got[31] == "test"
    assert (got[32:] == "unsplit").all()  # rows the file does not list keep their split
    dup = tmp_path / "dup.csv"
    dup.write_text(f"id,split\n{ids[0]},train\n{ids[0]},train\n")
    assert main([path, "--from-file", str(dup)]) == 2
    _one_error_line(capsys, "dup.csv:3", "twice")
    assert verify_store(path).ok


@pytest.mark.parametrize("args, words", [
    (["--fractions", "0.7,0.2"], "sum to 1"),
    (["--fractions", "0.7,0.3", "--names", "train"], "--names"),
    (["--fractions", "1", "--seed", "-1"], "--seed"),
    (["--from-file", "nope.csv"], "nope.csv"),
])
def test_usage_errors_are_one_line(unsplit, capsys, args, words):
    try:
        code = main([str(unsplit.path), *args])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert words in err[-1] and "error: " in err[-1]


def test_interrupted_swap_is_completed_on_open(unsplit, tmp_path):
    """A crash between the two renames: the new column is aside, videos/split is gone."""
    path = unsplit.path
    assert main([str(path), "--fractions", "0.5,0.5", "--names", "train,val", "--seed", "0"]) == 0
    new = _splits(path)
    aside = path.parent / f".{path.name}.split-new"
    os.rename(path / "videos" / "split", aside)
    assert not verify_store(path).ok  # the column is missing until a writable open
    FeatureStore.open(path, "a")
    assert not aside.exists()
    np.testing.assert_array_equal(_splits(path), new)
    assert verify_store(path).ok


def test_heads_train_works_after_splitting(unsplit, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    train = [sys.executable, "-m", "heads.train", "--store", str(unsplit.path), "--features", "synthetic",
             "--head", "mean_mlp", "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r")]
    r = subprocess.run(train, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 2 and "train" in r.stderr  # no train rows yet
    split = [sys.executable, "-m", "store.split", str(unsplit.path), "--fractions", "0.6,0.2,0.2"]
    r = subprocess.run(split, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(train, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "val" in r.stdout and verify_store(unsplit.path).ok
