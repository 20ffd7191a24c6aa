"""Fusion: mAP of each input run and of mean / weighted / logistic / xgboost fusion, and fit time.

The store is the one named by ``args.fusion_store`` (or the environment variable
``FUSION_BENCH_STORE``) with runs ``args.fusion_runs`` / ``FUSION_BENCH_RUNS`` (default
``rgb flow audio``). Without one, a synthetic store is built: 9k videos (``--size``) x 40
classes, three out-of-fold runs mimicking RGB/flow/audio heads (fusion.synthetic: families
of classes each seen by one modality, audio only with an audio track, and action x direction
classes that need RGB and flow together).

Fitting happens on the out-of-fold train rows when every run has them, else on val (scored
on test). Beside our xgboost stacker, on every 5th class, the plain alternative is timed and
scored: one default ``XGBClassifier`` per class on all ``M * C`` scores (depth 6, 100 rounds,
256 bins, no early stopping, classes one after another with every thread), and so is our
stacker training one class at a time with every thread instead of classes in threads.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import xgboost as xgb

from benchmarks.registry import register_benchmark
from fusion import StackInputs, fuse_runs, get_fusion, load_inputs
from fusion.errors import LeakageError
from fusion.synthetic import make_synthetic_fusion_store
from heads.metrics import class_map
from store import FeatureStore

COMPARE = ["logistic", "weighted", "mean"]


def _store_and_runs(args: argparse.Namespace) -> tuple[FeatureStore, list[str]]:
    path = getattr(args, "fusion_store", None) or os.environ.get("FUSION_BENCH_STORE")
    runs = getattr(args, "fusion_runs", None) or os.environ.get("FUSION_BENCH_RUNS", "rgb flow audio").split()
    if path:
        print(f"   store {path}, runs {' '.join(runs)}")
        return FeatureStore.open(path, mode="r"), list(runs)
    n = args.size or 9000
    work = args.workdir / "fusion"
    work.mkdir(parents=True, exist_ok=True)
    print(f"   synthetic store: {n} videos x 40 classes, runs rgb/flow/audio (out-of-fold on train)")
    fs = make_synthetic_fusion_store(work / "synthetic.zarr", n_videos=n, n_classes=40, seed=0)
    return fs, ["rgb", "flow", "audio"]


def _plain_xgboost(x: StackInputs, labels: np.ndarray, fit: np.ndarray, ev: np.ndarray) -> tuple[float, float]:
    """The plain alternative: a default XGBClassifier per class on all M*C probabilities."""
    feats = x.masked().reshape(len(x), -1)  # (N, M, C) -> (N, M * C)
    scores = np.zeros((len(ev), x.n_classes), np.float32)
    t0 = time.perf_counter()
    for c in range(x.n_classes):
        if not labels[fit, c].any():
            continue
        model = xgb.XGBClassifier(tree_method="hist", n_jobs=len(os.sched_getaffinity(0)))
        model.fit(feats[fit], labels[fit, c])
        scores[:, c] = model.predict_proba(feats[ev])[:, 1]
    return class_map(scores, labels[ev]).value, time.perf_counter() - t0


def _subset_comparison(x: StackInputs, labels: np.ndarray, fit: np.ndarray, ev: np.ndarray) -> dict[str, float]:
    """Ours (classes in threads, or one at a time) vs the plain path on every 5th class (the plain
    path is slow: about 37 s for 40 classes on an idle 2-core machine, far more under load)."""
    sub = np.arange(0, x.n_classes, 5)
    xs = StackInputs(x.probs[:, :, sub], x.available, x.names)
    ys = labels[:, sub]
    m: dict[str, float] = {"subset_classes": float(len(sub))}
    for key, settings in (("xgb_subset", {}), ("xgb_subset_one_class_at_a_time", {"class_threads": False})):
        t0 = time.perf_counter()
        fuser = get_fusion("xgboost", settings).fit(xs.take(fit), ys[fit])
        m[f"{key}_fit_s"] = time.perf_counter() - t0
        m[f"{key}_map"] = class_map(fuser.predict(xs.take(ev)), ys[ev]).value
    m["plain_subset_map"], m["plain_subset_fit_s"] = _plain_xgboost(xs, ys, fit, ev)
    return m


@register_benchmark("fusion", "late fusion of RGB/flow/audio runs: mAP of inputs, mean, weighted, logistic, xgboost")
def bench_fusion(args: argparse.Namespace) -> dict[str, float]:
    fs, runs = _store_and_runs(args)
    fit_split, eval_split = "train", "test"
    try:
        result = fuse_runs(fs, runs, method="xgboost", compare=COMPARE, fit_split=fit_split, eval_split=eval_split)
    except LeakageError as exc:
        print(f"   out-of-fold stacking refused ({exc}); fitting on val instead")
        fit_split = "val"
        result = fuse_runs(fs, runs, method="xgboost", compare=COMPARE, fit_split=fit_split, eval_split=eval_split)
    best = result.best_input
    m = {f"{r}_map": result.input_metrics[r]["class_map"] for r in result.inputs}
    m["best_single_map"] = result.input_metrics[best]["class_map"]
    for name, key in (("mean", "mean"), ("weighted", "weighted"), ("logistic", "logistic"), ("xgboost", "xgb")):
        m[f"{key}_map"] = result.methods[name].metrics["class_map"]
        m[f"{key}_sample_map"] = result.methods[name].metrics["sample_map"]
        m[f"{key}_gap20"] = result.methods[name].metrics["gap20"]
    for name, key in (("xgboost", "xgb"), ("logistic", "logistic"), ("weighted", "weighted")):
        m[f"{key}_fit_s"] = result.methods[name].fit_seconds
    x = load_inputs(fs, runs)[0].take(slice(None))  # this benchmark's stores are small: all rows in RAM
    m.update(_subset_comparison(x, fs.labels(), result.plan.fit_rows, result.plan.eval_rows))

    print(f"   fitted on {fit_split} ({len(result.plan.fit_rows)} rows), scored on {eval_split} "
          f"({len(result.plan.eval_rows)} rows); {len(fs.classes)} classes; {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    for key, v in m.items():
        print(f"   {key:36s} {v:10.4f}")
    print(f"   xgb vs best single input ({best}): {100 * (m['xgb_map'] - m['best_single_map']):+.1f} points "
          f"(target >= +5); vs weighted {100 * (m['xgb_map'] - m['weighted_map']):+.2f} (target >= 0); "
          f"vs logistic {100 * (m['xgb_map'] - m['logistic_map']):+.2f} (target >= 0); xgb fit {m['xgb_fit_s']:.1f} s")
    print(f"   on {int(m['subset_classes'])} classes: plain per-class XGBClassifier {m['plain_subset_fit_s']:.1f} s, "
          f"ours {m['xgb_subset_fit_s']:.1f} s ({m['plain_subset_fit_s'] / max(m['xgb_subset_fit_s'], 1e-9):.1f}x "
          f"faster, {100 * (m['xgb_subset_map'] - m['plain_subset_map']):+.2f} mAP points); classes in threads vs "
          f"one at a time with all threads: "
          f"{m['xgb_subset_one_class_at_a_time_fit_s'] / max(m['xgb_subset_fit_s'], 1e-9):.2f}x")
    return m
