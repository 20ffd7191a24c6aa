"""Fusion in row blocks equals fusion all at once; the fit-row sample is bounded and recorded."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fusion.inputs
import fusion.xgb
from fusion.inputs import load_inputs
from fusion.pipeline import fuse_runs, sample_rows
from fusion.registry import get_fusion
from fusion.synthetic import make_synthetic_fusion_store
from heads.metrics import evaluate

RUNS = ["rgb", "flow", "audio"]
FAST_XGB = {"xgboost": {"n_rounds": 30, "n_jobs": 2}}


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    return make_synthetic_fusion_store(tmp_path_factory.mktemp("blocks") / "s.zarr", n_videos=2500, n_classes=12,
                                       seed=5)


@pytest.fixture(scope="module")
def fs20k(tmp_path_factory):
    return make_synthetic_fusion_store(tmp_path_factory.mktemp("blocks20k") / "s.zarr", n_videos=20_000,
                                       n_classes=12, seed=6)


@pytest.mark.parametrize("method", ["logistic", "xgboost"])
def test_blocks_of_1000_rows_equal_the_in_memory_computation_on_20k_rows(fs20k, method, monkeypatch):
    fs = fs20k
    # the unblocked computation: every run's (N, M, C) in RAM, fitted and predicted in one call each
    x_all = load_inputs(fs, RUNS)[0].take(slice(None))
    monkeypatch.setattr(fusion.inputs, "BLOCK_ELEMENTS", 1000 * 12 * 6)  # 1000-row blocks everywhere
    monkeypatch.setattr(fusion.xgb, "PREDICT_BLOCK_ELEMENTS", 1000 * 12 * 3)
    blocked = fuse_runs(fs, RUNS, method=method, settings=FAST_XGB, write_as=f"b_{method}", overwrite=True,
                        block_rows=1000, fit_rows=0)
    plan = blocked.plan
    labels = fs.labels()
    fuser = get_fusion(method, FAST_XGB.get(method)).fit(x_all.take(plan.fit_rows), labels[plan.fit_rows])
    with monkeypatch.context() as m:
        m.setattr(fusion.xgb, "PREDICT_BLOCK_ELEMENTS", 1 << 40)  # one block: all rows at once
        want = fuser.predict(x_all)  # (N, C)
    got = fs.read_predictions(f"b_{method}")[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    expected = evaluate(want[plan.eval_rows], labels[plan.eval_rows])
    for k, v in expected.items():
        assert blocked.main.metrics[k] == pytest.approx(v, abs=1e-4)
    assert expected["class_map"] > max(blocked.input_metrics[r]["class_map"] for r in RUNS)  # fusion helps


@pytest.mark.parametrize("method", ["logistic", "xgboost"])
def test_blocks_of_100_rows_equal_the_whole(fs, method, monkeypatch):
    whole = fuse_runs(fs, RUNS, method=method, settings=FAST_XGB, write_as=f"whole_{method}", overwrite=True,
                      block_rows=1 << 20)
    monkeypatch.setattr(fusion.inputs, "BLOCK_ELEMENTS", 100 * 12 * 6)  # 100-row feature blocks
    monkeypatch.setattr(fusion.xgb, "PREDICT_BLOCK_ELEMENTS", 100 * 12 * 3)
    blocked = fuse_runs(fs, RUNS, method=method, settings=FAST_XGB, write_as=f"blocked_{method}", overwrite=True,
                        block_rows=100)
    a, b = fs.read_predictions(f"whole_{method}")[0], fs.read_predictions(f"blocked_{method}")[0]
    assert not np.isnan(a).any()
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    ranks_equal = np.array_equal(np.argsort(a[whole.plan.eval_rows], axis=0),
                                 np.argsort(b[whole.plan.eval_rows], axis=0))
    for k, v in whole.main.metrics.items():
        assert blocked.main.metrics[k] == pytest.approx(v, abs=1e-9 if ranks_equal else 1e-4)
    # the written run is scored on the eval rows exactly as the result says
    labels = fs.labels(whole.plan.eval_rows)
    assert evaluate(a[whole.plan.eval_rows], labels) == whole.main.metrics


def test_fit_rows_sample_is_bounded_seeded_and_recorded(fs):
    rows = np.arange(10, 2000, 3)
    pick = sample_rows(rows, 100)
    assert len(pick) == 100 and np.all(np.diff(pick) > 0) and np.isin(pick, rows).all()
    np.testing.assert_array_equal(pick, sample_rows(rows, 100))
    assert sample_rows(rows, None) is rows and sample_rows(rows, 10_000) is rows
    res = fuse_runs(fs, RUNS, method="logistic", compare=[], write_as="sampled", overwrite=True, fit_rows=300)
    attrs = fs.prediction_attrs("sampled")
    assert attrs["fit_rows"] == {"used": 300, "of": len(res.plan.fit_rows), "limit": 300}
    assert len(res.fit_rows) == 300 and np.isin(res.fit_rows, res.plan.fit_rows).all()
    full = fuse_runs(fs, RUNS, method="logistic", compare=[], fit_rows=0)
    assert len(full.fit_rows) == len(full.plan.fit_rows) > 300
    assert full.main.metrics["class_map"] > res.main.metrics["class_map"] - 0.05


def test_threads_change_no_bit_of_logistic_and_xgboost(problem, monkeypatch):
    import xgboost as xgb

    import fusion.logistic

    syn, x, train, test = problem
    monkeypatch.setattr(fusion.inputs, "BLOCK_ELEMENTS", 100 * 16 * 6)  # 100-row blocks: many per thread
    xt = x.take(test)
    got = {}
    for n in (1, 2):
        monkeypatch.setattr(fusion.logistic, "_CACHE_BYTES", (256 << 20) if n == 1 else 0)  # and without the cache
        lin = get_fusion("logistic", {"n_jobs": n}).fit(x.take(train), syn.labels[train])
        trees = get_fusion("xgboost", {"n_rounds": 20, "n_jobs": n}).fit(x.take(train), syn.labels[train])
        got[n] = lin.coef_, lin.margin(xt), lin.contributions(xt), trees.margin(xt)
    for a, b in zip(got[1], got[2]):
        np.testing.assert_array_equal(a, b)
    # the prediction without a DMatrix equals XGBoost's predict() on one, class by class
    base, logits = trees._base_margin(xt), xt.masked_logits()
    for c in (0, 7, 13):
        dm = xgb.DMatrix(trees._class_matrix(logits, xt.available, c), base_margin=base[:, c])
        np.testing.assert_array_equal(got[2][3][:, c], trees.boosters_[c].predict(dm, output_margin=True))


_FAULTS = """
import resource, sys
import numpy as np
import fusion.logistic
from fusion.inputs import StackInputs
from fusion.logistic import LogisticFusion, LogisticSettings
from store.malloc import raise_malloc_thresholds
if sys.argv[1] == "raise":
    assert raise_malloc_thresholds()
fusion.logistic._CACHE_BYTES = 0  # every Newton pass builds its design blocks again, as at 1M rows
rng = np.random.default_rng(0)
n, m, c = 20000, 3, 313
labels = (rng.random((n, c)) < 0.05).astype(np.uint8)
x = StackInputs(rng.random((n, m, c), dtype=np.float32), np.ones((n, m), bool), ("a", "b", "c"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
LogisticFusion(LogisticSettings(max_iter=2, n_jobs=2)).fit(x, labels)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc and ru_minflt")
def test_malloc_thresholds_stop_the_threaded_logistic_fit_faulting_pages_in():
    # what fusion.run does before fitting: without it, glibc returns the threads' freed blocks to
    # the OS after every row block and faults fresh pages in for the next (190k faults vs 10k here)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    faults = {k: int(subprocess.run([sys.executable, "-c", _FAULTS, k], env=env, capture_output=True, text=True,
                                    check=True).stdout.split()[-1]) for k in ("default", "raise")}
    assert faults["raise"] * 4 < faults["default"], faults
