"""``python -m fusion.run``: the fused run, the report, and one-line refusals with exit status 2."""

import numpy as np
import pandas as pd
import pytest

from fusion.run import main
from fusion.synthetic import make_synthetic_fusion_store
from store import FeatureStore

RUNS = ["--runs", "rgb", "flow", "audio"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("fusion") / "syn.zarr"
    fs = make_synthetic_fusion_store(path, n_videos=1500, n_classes=8, seed=3)
    rgb, _ = fs.read_predictions("rgb")
    fs.write_predictions("insample", rgb, attrs={"score_type": "sigmoid"})  # fold -1 everywhere
    return path


def test_cli_writes_the_fused_run_and_the_report(store_path, tmp_path, capsys):
    rep = tmp_path / "report"
    assert main(["--store", str(store_path), *RUNS, "--report", str(rep), "--rounds", "40", "--out", "fx"]) == 0
    out = capsys.readouterr().out
    assert "fused run written: fx" in out and "logistic" in out and "weighted" in out
    fs = FeatureStore.open(store_path, mode="r")
    scores, attrs = fs.read_predictions("fx")
    assert scores.shape == (1500, 8) and np.isfinite(scores).all()
    assert (fs.read_prediction_folds("fx") == -1).all()
    assert attrs["method"] == "xgboost" and attrs["inputs"] == ["rgb", "flow", "audio"]
    assert (attrs["fit_split"], attrs["eval_split"], attrs["train_splits"]) == ("train", "test", ["train"])
    fused = attrs["metrics"]["test"]["class_map"]
    assert all(fused > attrs["inputs_metrics"]["test"][r]["class_map"] for r in ("rgb", "flow", "audio"))
    assert set(attrs["reliance"]) == {"rgb", "flow", "audio"} and "gain_per_input" in attrs["fusion"]
    md = (rep / "report.md").read_text()
    assert "| name | kind | class mAP | sample mAP | GAP@20 | top-1 | top-5 | fit s |" in md
    assert "| rgb | input |" in md and "| xgboost | fusion |" in md and "relies most on" in md
    assert all(f"| {c} |" in md for c in fs.classes)  # the per-class table
    for png in ("overall.png", "ap_gain.png", "reliance.png"):
        assert (rep / png).read_bytes()[:4] == b"\x89PNG"
    # the fused run is in-sample on train (the stacker fitted there): stacking it again on train leaks
    assert main(["--store", str(store_path), "--runs", "rgb", "fx", "--no-write"]) == 2
    assert "run 'fx' predicted" in capsys.readouterr().err


def test_a_mean_fits_nothing_so_in_sample_train_rows_do_not_matter(store_path, capsys):
    assert main(["--store", str(store_path), "--runs", "rgb", "insample", "--method", "mean", "--compare",
                 "--no-write"]) == 0
    assert "mean" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--runs", "rgb", "insample"], "run 'insample' predicted"),
    ([*RUNS, "--fit-split", "test"], "--fit-split and --eval-split are both 'test'"),
    (["--runs", "rgb", "nope"], "no prediction run 'nope'"),
    ([*RUNS, "--out", "rgb"], "is one of the input runs"),
    ([*RUNS, "--eval-split", "holdout"], "eval split 'holdout' has no rows"),
])
def test_cli_refuses_with_one_line_and_status_2(store_path, capsys, args, message):
    assert main(["--store", str(store_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


def test_cli_refuses_to_replace_a_run_without_overwrite(store_path, capsys):
    argv = ["--store", str(store_path), *RUNS, "--method", "mean", "--compare", "--out", "m"]
    assert main(argv) == 0
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0


def test_cli_refuses_runs_that_miss_rows_bad_config_and_missing_stores(tmp_path, capsys):
    fs = make_synthetic_fusion_store(tmp_path / "s.zarr", n_videos=200, n_classes=4)
    fs.append_videos(pd.DataFrame({"id": ["late"], "path": "x", "split": "test"}), np.eye(4, dtype=np.uint8)[:1])
    assert main(["--store", str(fs.path), *RUNS]) == 2
    assert "has 200 rows x 4 classes but the store has 201 videos" in capsys.readouterr().err
    cfg = tmp_path / "f.toml"
    cfg.write_text("[boosting]\nmax_depth = 2\n")
    assert main(["--store", str(fs.path), *RUNS, "--config", str(cfg)]) == 2
    assert "tables are method names" in capsys.readouterr().err
    assert main(["--store", str(tmp_path / "none.zarr"), *RUNS]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_config_file_and_flags_set_method_settings(store_path, tmp_path, capsys):
    cfg = tmp_path / "f.toml"
    cfg.write_text("[xgboost]\nmax_depth = 2\nn_rounds = 15\n[weighted]\nper_class = true\n")
    assert main(["--store", str(store_path), *RUNS, "--config", str(cfg), "--learning-rate", "0.3", "--out", "cfg",
                 "--compare", "weighted"]) == 0
    _, attrs = FeatureStore.open(store_path, mode="r").read_predictions("cfg")
    s = attrs["fusion"]["settings"]
    assert (s["max_depth"], s["n_rounds"], s["learning_rate"]) == (2, 15, 0.3)
    assert max(attrs["fusion"]["rounds"]) <= 15
