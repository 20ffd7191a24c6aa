"""``--only gpu``: one command that runs everything that needs CUDA, in at most ten minutes.

``python -m benchmarks.run --only gpu`` on a machine where torch sees a CUDA GPU:

1. **extraction** (:func:`check_extraction`): R(2+1)D-18 (2 clips x 16 frames) and a ResNet-50
   TSN (8 frames), 112 px demo videos, each with float16 and bfloat16 autocast
   (``--amp-dtype``), pinned host batches copied without blocking, 2D backbones in
   channels-last: decode-only, model-only and pipeline clips/s, the pipeline against
   ``min(decode, model)`` (what a perfect overlap gives) and the GPU utilisation sampled
   during the pipeline run (:func:`gpu_utilization`: ``torch.cuda.utilization``, else
   ``nvidia-smi``).
2. **RAFT** (:func:`check_raft`): ``raft_small`` and ``raft_large`` frame pairs/s, batched.
3. **faiss** (:func:`check_faiss`): the store's ``auto`` index over ``SIZES.faiss_vectors``
   (1M) clustered 128-d vectors, on GPU 0 when faiss has GPU support (else on the CPU, said in
   one line): build seconds, queries/s, recall@10 against exact search.
4. **XGBoost** (:func:`check_xgboost`): the fusion's booster parameters
   (``XGBSettings.params``) with ``device="cuda"``: boosting rounds/s on synthetic rows.
5. **head sweep** (:func:`check_sweep`): ``heads.sweep.run_sweep`` of a few heads on a clustered
   store, ``device="cuda"``: runs/s and the best val mAP.

Without a GPU the command says so in one line and exits 0 (``--require-gpu``: 1). Every part
takes ``device`` and its sizes, so the CPU tests run each branch with ``device="cpu"`` and
:data:`TINY` sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
import xgboost as xgb

from benchmarks.extract_bench import _decode_stage, _model_stage, _pipeline
from benchmarks.flow_bench import raft_weights
from benchmarks.registry import register_benchmark
from extract.demo import DemoConfig, make_demo
from extract.dump import pipeline
from extract.dump.settings import AMP_DTYPES, ExtractSettings
from extract.media.decode import decode_video
from extract.media.raft import RAFT_MODELS, raft_pair_flows
from fusion.xgb import XGBSettings, cuda_visible
from heads.sweep import run_sweep
from heads.trainer import TrainConfig
from store.index import FeatureIndex, IndexSpec, clustered_vectors, gpu_available
from store.testing import make_clustered_store

NO_GPU = "gpu: torch sees no CUDA GPU on this machine; nothing to check (--require-gpu makes this an error)"


@dataclass(frozen=True)
class GpuCheckSizes:
    """How much each part of the check does (the defaults fit ten minutes on one GPU).

    Attributes:
        videos: demo videos (112 px, 3 s) for extraction and RAFT.
        models: ``(backbone, clips per video, batch size)`` of the extraction part.
        workers: decode workers (None: the run's default for the device).
        raft_pairs: frame pairs per RAFT timing; raft_batch: pairs per forward pass.
        faiss_vectors, faiss_dim, faiss_clusters, faiss_queries: the search part.
        xgb_rows, xgb_features, xgb_rounds: the XGBoost part.
        sweep_videos, sweep_heads, sweep_epochs: the head sweep part.
    """

    videos: int = 32
    models: tuple[tuple[str, int, int], ...] = (("r2plus1d_18", 2, 32), ("resnet50", 8, 128))
    workers: int | None = None
    raft_pairs: int = 64
    raft_batch: int = 32
    faiss_vectors: int = 1_000_000
    faiss_dim: int = 128
    faiss_clusters: int = 1000
    faiss_queries: int = 10_000
    xgb_rows: int = 200_000
    xgb_features: int = 64
    xgb_rounds: int = 100
    sweep_videos: int = 20_000
    sweep_heads: tuple[str, ...] = ("mean_mlp", "max_mlp", "netvlad", "nextvlad")
    sweep_epochs: int = 3


SIZES = GpuCheckSizes()
#: What the CPU tests run: every branch, tiny models and data.
TINY = GpuCheckSizes(videos=2, models=(("r2plus1d_tiny", 1, 2), ("resnet_tiny", 2, 4)), workers=0, raft_pairs=2,
                     raft_batch=2, faiss_vectors=3000, faiss_dim=16, faiss_clusters=20, faiss_queries=50,
                     xgb_rows=200, xgb_features=4, xgb_rounds=3, sweep_videos=60, sweep_heads=("mean_mlp",),
                     sweep_epochs=1)


def gpu_utilization() -> float | None:
    """GPU 0's utilisation in percent over the last sample period, or None where nothing can tell."""
    try:
        return float(torch.cuda.utilization(0))
    except (ImportError, RuntimeError, ValueError, AssertionError):  # no pynvml / amdsmi, or no driver
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        return float(out.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


class UtilizationSampler:
    """Samples ``read()`` every ``period_s`` in a thread while the ``with`` block runs."""

    def __init__(self, read: Callable[[], float | None] = gpu_utilization, period_s: float = 0.5) -> None:
        self.read, self.period_s, self.samples = read, period_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            value = self.read()
            if value is not None:
                self.samples.append(value)
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> UtilizationSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None

    def describe(self) -> str:
        if not self.samples:
            return "GPU utilisation unknown (neither torch.cuda.utilization nor nvidia-smi answered)"
        return f"GPU utilisation mean {np.mean(self.samples):.0f}%, max {max(self.samples):.0f}%"


def check_extraction(demo, work: Path, device: str, sizes: GpuCheckSizes = SIZES,
                     read_utilization: Callable[[], float | None] = gpu_utilization) -> dict[str, float]:
    """Decode, model and pipeline clips/s for each model x autocast type, with GPU utilisation."""
    store = work / "gpu_extract.zarr"
    shutil.rmtree(store, ignore_errors=True)
    fs, targets = pipeline.prepare_store(store, demo.video_list(), workers=sizes.workers or 0)
    meta = fs.videos(["n_frames", "fps"])
    out: dict[str, float] = {}
    for backbone, clips, batch in sizes.models:
        for dtype in AMP_DTYPES:
            key = f"{backbone}_{dtype}"
            s = ExtractSettings(backbone=backbone, weights="random", crop=112, clips=clips, batch_size=batch,
                                device=device, amp=True, amp_dtype=dtype, workers=sizes.workers, set_name=f"gpu_{key}",
                                chunk_rows=64)
            workers, threads = s.parallelism(device)
            producers = pipeline.build_producers(s, device)
            decode, inputs = _decode_stage(targets, meta, producers[0].maker, workers)
            model = _model_stage(producers[0], inputs, batch, threads)
            with UtilizationSampler(read_utilization) as util:
                stats = _pipeline(fs, targets, producers, s)
            rate = stats.clips / stats.seconds
            out |= {f"{key}_decode_clips_per_s": decode, f"{key}_model_clips_per_s": model,
                    f"{key}_pipeline_clips_per_s": rate, f"{key}_pipeline_vs_bound": rate / min(decode, model)}
            if util.mean is not None:
                out[f"{key}_gpu_utilization_pct"] = util.mean
            print(f"   {backbone} {clips} clips/video, {dtype} autocast{'' if producers[0].amp else ' (off: CPU)'}, "
                  f"{workers} decode workers: decode {decode:.1f}, model {model:.1f}, pipeline {rate:.1f} clips/s = "
                  f"{rate / min(decode, model):.2f} x min(decode, model); {util.describe()}")
    return out


def check_raft(demo, work: Path, device: str, sizes: GpuCheckSizes = SIZES) -> dict[str, float]:
    """Frame pairs/s of each RAFT model on consecutive demo frames, ``sizes.raft_batch`` pairs a pass."""
    path = demo.video_list().videos["path"].iloc[0]
    n = min(sizes.raft_pairs, demo.config.n_frames - 1)
    frames = decode_video(path, np.arange(n + 1)).frames  # (n+1, H, W, 3)
    pairs = np.stack([np.arange(n), np.arange(1, n + 1)], axis=1)  # (n, 2)
    out = {}
    for name in RAFT_MODELS:
        with raft_weights(name, work / "torch_home") as real:
            raft_pair_flows(frames, pairs[: sizes.raft_batch], name, device=device, batch=sizes.raft_batch)  # warm-up
            t = time.perf_counter()
            raft_pair_flows(frames, pairs, name, device=device, batch=sizes.raft_batch)  # returns numpy: synchronised
            out[f"{name}_pairs_per_s"] = n / (time.perf_counter() - t)
        print(f"   {name}: {out[f'{name}_pairs_per_s']:.1f} pairs/s at 112 px, batch {sizes.raft_batch}"
              f"{'' if real else ' (random weights: torchvision checkpoint not cached)'}")
    return out


def check_faiss(sizes: GpuCheckSizes = SIZES, *, use_gpu: bool | None = None) -> dict[str, float]:
    """The store's auto index over clustered vectors: build s, queries/s, recall@10 vs exact search."""
    use_gpu = gpu_available() if use_gpu is None else use_gpu
    if not use_gpu:
        print("   faiss: this faiss has no GPU (faiss-cpu, or no device it can see): searching on the CPU "
              "(install the gpu extra, faiss-gpu, for the GPU path)")
    n, d = sizes.faiss_vectors, sizes.faiss_dim
    x = clustered_vectors(n, d, sizes.faiss_clusters, seed=0)  # (n, d) unit vectors
    rng = np.random.default_rng(1)
    q = x[rng.choice(n, sizes.faiss_queries, replace=False)] + rng.normal(0, 0.05, (sizes.faiss_queries, d))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)  # (Q, d) held-out-like queries
    t = time.perf_counter()
    index = FeatureIndex.from_vectors(x, np.arange(n), IndexSpec(gpu=use_gpu))
    build = time.perf_counter() - t
    index.search_positions(q[:10], 10)  # warm-up
    t = time.perf_counter()
    _, pos = index.search_positions(q, 10)  # (Q, 10)
    qps = len(q) / (time.perf_counter() - t)
    m = min(1000, len(q))
    _, exact = faiss.knn(q[:m], x, 10, metric=faiss.METRIC_INNER_PRODUCT)  # (m, 10) brute force
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pos[:m], exact)]))
    print(f"   faiss: {index.describe()}; built in {build:.1f} s, {qps:,.0f} queries/s, recall@10 {recall:.3f} "
          f"against exact search ({m} queries)")
    return {"faiss_on_gpu": float(index.on_gpu), "faiss_build_s": build, "faiss_queries_per_s": qps,
            "faiss_recall_at_10": recall}


def check_xgboost(device: str, sizes: GpuCheckSizes = SIZES) -> dict[str, float]:
    """Boosting rounds/s of the fusion's per-class booster parameters on ``device``.

    An XGBoost without CUDA (or that sees no GPU) is said in one line and runs on the CPU.
    """
    if device != "cpu" and not cuda_visible():
        print("   xgboost: this XGBoost has no CUDA (a CPU-only build, or no GPU it can see): training on the CPU")
        device = "cpu"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(sizes.xgb_rows, sizes.xgb_features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(0, 0.5, sizes.xgb_rows) > 0.5).astype(np.float32)
    dtrain = xgb.DMatrix(x, label=y)
    t = time.perf_counter()
    booster = xgb.train(XGBSettings().params(device, 0), dtrain, sizes.xgb_rounds)
    rate = sizes.xgb_rounds / (time.perf_counter() - t)
    ran_on = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    print(f"   xgboost device={device}: {rate:.1f} rounds/s on {sizes.xgb_rows:,} x {sizes.xgb_features} "
          f"(the booster says device {ran_on})")
    return {"xgboost_rounds_per_s": rate, "xgboost_on_cuda": float(ran_on.startswith("cuda"))}


def check_sweep(work: Path, device: str, sizes: GpuCheckSizes = SIZES) -> dict[str, float]:
    """``run_sweep`` of ``sizes.sweep_heads`` on a clustered store, on ``device``, in this process."""
    path = work / f"gpu_sweep_{sizes.sweep_videos}.zarr"
    fs = make_clustered_store(path, n_videos=sizes.sweep_videos, n_classes=50, clips=8, dim=128, feature_set="feats")
    configs = [TrainConfig(features=("feats",), head=h, epochs=sizes.sweep_epochs, device=device, batch_size=256)
               for h in sizes.sweep_heads]
    t = time.perf_counter()
    table = run_sweep(fs, configs, resume=False, progress=False)
    seconds = time.perf_counter() - t
    failed = table[table["status"] == "failed"]
    if len(failed):
        raise RuntimeError(f"head sweep on {device}: {failed['run'].iloc[0]} failed: {failed['error'].iloc[0]}")
    best = float(table["val_class_map"].max())
    print(f"   head sweep on {device}: {len(configs)} heads x {sizes.sweep_epochs} epochs on {sizes.sweep_videos:,} "
          f"videos in {seconds:.1f} s ({len(configs) / seconds:.2f} runs/s), best val class mAP {best:.3f}")
    return {"sweep_runs_per_s": len(configs) / seconds, "sweep_best_val_map": best}


def gpu_check(workdir: Path, device: str, sizes: GpuCheckSizes = SIZES,
              read_utilization: Callable[[], float | None] = gpu_utilization) -> dict[str, float]:
    """Every part, in order, on ``device``; the metrics of all."""
    work = workdir / "gpu"
    work.mkdir(parents=True, exist_ok=True)
    demo = make_demo(workdir / f"gpu_demo_{sizes.videos}", DemoConfig(videos=sizes.videos, size=112), progress=False)
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    for name, part in (("extraction", lambda: check_extraction(demo, work, device, sizes, read_utilization)),
                       ("raft", lambda: check_raft(demo, work, device, sizes)),
                       ("faiss", lambda: check_faiss(sizes)),
                       ("xgboost", lambda: check_xgboost(device, sizes)),
                       ("sweep", lambda: check_sweep(work, device, sizes))):
        t = time.perf_counter()
        metrics |= part()
        metrics[f"{name}_check_s"] = time.perf_counter() - t
    metrics["gpu_check_s"] = time.perf_counter() - t0
    print(f"   the check took {metrics['gpu_check_s']:.0f} s (" + ", ".join(
        f"{n} {metrics[f'{n}_check_s']:.0f} s" for n in ("extraction", "raft", "faiss", "xgboost", "sweep"))
        + "; budget 600 s with the demo)")
    return metrics


@register_benchmark("gpu", "everything that needs CUDA in one command: extraction (fp16/bf16), RAFT, faiss-GPU on "
                           "1M vectors, XGBoost on CUDA, a head sweep; clips/s vs min(decode, model), GPU use")
def bench_gpu(args: argparse.Namespace) -> dict[str, float]:
    if not torch.cuda.is_available():  # benchmarks.run says so in one line before getting here
        raise RuntimeError(NO_GPU)
    sizes = dataclasses.replace(SIZES, videos=args.size) if args.size else SIZES
    print(f"   GPU: {torch.cuda.get_device_name(0)}")
    return gpu_check(args.workdir, "cuda", sizes)
