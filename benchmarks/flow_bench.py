"""Optical flow: what each method costs and what it keeps of the motion, on the same frames.

Methods (:data:`METHODS`): Farneback, TV-L1 with OpenCV's defaults, TV-L1 with the ``fast``
preset (``extract.media.flow.TVL1_PRESETS``), and RAFT-small (torchvision) on the CPU.

* ``flow_<method>_pairs_per_s``: :func:`flow_rates`, ``compute_flow`` on the same
  consecutive 112 px demo frames, one OpenCV / torch thread (what one decode worker has),
  best of ``REPEATS``; ``extract`` reports these too.
* ``flow_probe_<method>_auc``: a linear probe of the demo's motion labels from each method's
  flow. For ``PROBE_VIDEOS`` demo videos the flow of ``PROBE_PAIRS`` consecutive pairs in
  the middle of the video, clipped to 20 px and scaled to [-1, 1] like ``extract.run`` does,
  is pooled to a 4 x 4 grid of mean x, y, |x|, |y| (64 numbers; the mean of the pairs); a
  logistic regression per motion class (standardised features, C = 1) is scored by
  cross-validated ROC AUC (``PROBE_FOLDS`` stratified folds), averaged over the motion
  classes that have enough positives. ``flow_probe_<method>_pairs_per_s`` is the flow's
  rate over all the probe's pairs.

RAFT needs torchvision's checkpoint in torch.hub's cache (no download on these machines):
when it is missing, RAFT is timed with random weights of the same layout (the cost does
not depend on the values) in a scratch ``TORCH_HOME``, and its probe score is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from benchmarks.registry import register_benchmark
from extract.demo import DemoConfig, make_demo
from extract.media.decode import decode_video
from extract.media.flow import FlowSettings, clip_flow_stack, compute_flow, flow_frame_indices
from extract.media.raft import RAFT_MODELS, load_raft, raft_checkpoint
from extract.media.sampling import union_frame_indices

#: method label -> FlowSettings; the label names the metrics.
METHODS = {
    "farneback": FlowSettings(algorithm="farneback"),
    "tvl1": FlowSettings(algorithm="tvl1"),
    "tvl1_fast": FlowSettings(algorithm="tvl1", preset="fast"),
    "raft_small": FlowSettings(algorithm="raft_small"),
}
RATE_PAIRS = {"farneback": 40, "tvl1": 4, "tvl1_fast": 16, "raft_small": 8}  # pairs timed per try
REPEATS = 2
PROBE_VIDEOS, PROBE_PAIRS, PROBE_FOLDS, GRID, PROBE_C = 80, 3, 4, 2, 0.3


@contextlib.contextmanager
def raft_weights(name: str, scratch: Path) -> Iterator[bool]:
    """Inside: RAFT ``name`` loads; yields whether its real weights are cached.

    Without them, ``TORCH_HOME`` points at ``scratch`` holding a random state dict of the right
    layout for the duration (timing only).
    """
    url, path = raft_checkpoint(name)
    if path.is_file():
        yield True
        return
    old = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(scratch)
    try:
        _, fake = raft_checkpoint(name)
        if not fake.is_file():
            fake.parent.mkdir(parents=True, exist_ok=True)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                torch.save(RAFT_MODELS[name][0](weights=None).state_dict(), fake)
        load_raft.cache_clear()
        yield False
    finally:
        load_raft.cache_clear()
        if old is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old


def _one_thread_rate(frames: np.ndarray, settings: FlowSettings, pairs: int, device: str) -> float:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        compute_flow(frames[:2], settings, device=device)  # warm-up (model load, kernels)
        best = 0.0
        for _ in range(REPEATS):
            t = time.perf_counter()
            compute_flow(frames[: pairs + 1], settings, device=device)
            best = max(best, pairs / (time.perf_counter() - t))
        return best
    finally:
        torch.set_num_threads(old)


def flow_rates(path: str, scratch: Path, device: str = "cpu") -> dict[str, float]:
    """``flow_<method>_pairs_per_s`` of every method on the same consecutive frames of ``path``."""
    frames = decode_video(path, np.arange(max(RATE_PAIRS.values()) + 1)).frames  # (P+1, H, W, 3)
    out = {}
    for label, settings in METHODS.items():
        with raft_weights(settings.algorithm, scratch) if label.startswith("raft") else contextlib.nullcontext():
            out[f"flow_{label}_pairs_per_s"] = _one_thread_rate(frames, settings, RATE_PAIRS[label], device)
    return out


def grid_features(stack: np.ndarray, grid: int = GRID) -> np.ndarray:
    """(N, 2, T, H, W) flow in [-1, 1] -> (4 * grid * grid,): cell means of x, y, |x|, |y| over all flows."""
    x = torch.from_numpy(stack).transpose(0, 1).reshape(2, -1, *stack.shape[3:])  # -> (2, N*T, H, W)
    x = torch.cat([x, x.abs()]).mean(dim=1, keepdim=True)  # (4, 1, H, W)
    return torch.nn.functional.adaptive_avg_pool2d(x, grid).reshape(-1).numpy()  # -> (4 * g * g,)


def probe_auc(features: np.ndarray, labels: np.ndarray, folds: int = PROBE_FOLDS) -> float:
    """Mean cross-validated ROC AUC of a per-class logistic regression.

    Args:
        features: (N, F) one row per video.
        labels: (N, C) 0/1; classes with fewer than ``folds`` positives or negatives are skipped.
    """
    aucs = []
    for c in range(labels.shape[1]):
        y = labels[:, c]
        if min(y.sum(), len(y) - y.sum()) < folds:
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000))
        cv = StratifiedKFold(folds, shuffle=True, random_state=0)
        scores = cross_val_predict(probe, features, y, cv=cv, method="decision_function")
        aucs.append(roc_auc_score(y, scores))
    if not aucs:
        raise ValueError(f"no class has {folds} positives and negatives; use more videos")
    return float(np.mean(aucs))


def _probe(demo, scratch: Path, n: int) -> dict[str, float]:
    videos = demo.video_list()
    motion = [i for i, c in enumerate(videos.classes) if demo.families[c] == "motion"]
    labels = videos.label_matrix()[:n, motion]  # (n, 10) motion labels
    frames = demo.config.n_frames
    idx = np.linspace(0, frames - 2, PROBE_PAIRS + 2).round().astype(np.int64)[1:-1, None]  # (P, 1)
    decoded = [decode_video(p, union_frame_indices(idx, flow_frame_indices(idx, n_frames=frames)))
               for p in videos.videos["path"][:n]]
    out = {}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for label, settings in METHODS.items():
            raft = label.startswith("raft")
            with raft_weights(settings.algorithm, scratch) if raft else contextlib.nullcontext() as real:
                t = time.perf_counter()
                stacks = [clip_flow_stack(d, idx, settings, n_frames=frames, device="cpu") for d in decoded]
                out[f"flow_probe_{label}_pairs_per_s"] = n * PROBE_PAIRS / (time.perf_counter() - t)
            if raft and not real:
                print(f"   {label}: torchvision's weights are not cached; timed with random weights, no probe score")
                continue
            out[f"flow_probe_{label}_auc"] = probe_auc(np.stack([grid_features(x) for x in stacks]), labels)
    finally:
        torch.set_num_threads(old)
    return out


@register_benchmark("flow", "optical flow: Farneback, TV-L1 (default, fast), RAFT-small: pairs/s and a "
                            "linear probe of the demo's motion labels")
def run_flow(args: argparse.Namespace) -> dict[str, float]:
    n = args.size or PROBE_VIDEOS
    demo = make_demo(args.workdir / f"flow_demo_{n}", DemoConfig(videos=n, size=112), progress=False)
    scratch = args.workdir / "flow" / "torch_home"
    metrics = flow_rates(demo.video_list().videos["path"].iloc[0], scratch)
    metrics |= _probe(demo, scratch, n)
    print(f"   {n} demo videos at 112 px, {PROBE_PAIRS} pairs each, one thread; motion probe: mean ROC AUC over "
          f"the motion classes (4-fold logistic regression)")
    for label in METHODS:
        auc = metrics.get(f"flow_probe_{label}_auc")
        print(f"     {label:11s} {metrics[f'flow_{label}_pairs_per_s']:8.2f} pairs/s   probe AUC "
              f"{'-' if auc is None else f'{auc:.3f}'}")
    return metrics
