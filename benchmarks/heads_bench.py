"""Head training on cached features: epoch speed, time waiting for data, and cached vs backbone cost.

On a synthetic store of 20,000 videos x 8 clips x 512 (float16, built once in the work
directory), one training epoch over the train split (70%) at batch 256 for each head, with the
features in RAM (the ``auto`` choice at this size) and, for the VLAD heads, streamed from the
store by the chunk reader. ``data_wait_fraction`` is the share of the epoch's wall time spent
blocked on the next batch. ``cached_speedup`` compares one head epoch over all the videos with
one forward pass of the smallest real backbone (ResNet-18 per frame at 112 px, 8 frames a
video, decoding not even counted) over the same videos, extrapolated from a few timed batches.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from benchmarks.registry import register_benchmark
from extract.backbones.registry import get_backbone
from heads import MemorySource, StreamSource
from heads.trainer import FeatureCache, TrainConfig, build_head, fit
from store import FeatureStore
from store.device import resolve_device
from store.errors import StoreError
from store.testing import make_synthetic_store

HEADS = ("netvlad", "nextvlad", "mean_mlp", "nonlocal_netvlad")
STREAMED = ("netvlad", "nextvlad")
CLIPS, DIM, CLASSES, BATCH = 8, 512, 313, 256
TARGET_WAIT, TARGET_SPEEDUP = 0.1, 1000.0


def _store(args: argparse.Namespace, n: int) -> FeatureStore:
    path = args.workdir / "heads" / f"synthetic_{n}x{CLIPS}x{DIM}.zarr"
    try:
        fs = FeatureStore.open(path, "a")
        if fs.n_videos == n and fs.feature_set("synthetic").done().all():
            return fs
    except StoreError:
        pass
    print(f"   building {path} (once)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_synthetic_store(path, n_videos=n, n_classes=CLASSES, clips=CLIPS, dim=DIM, seed=0)


def _backbone_frames_per_s(device: torch.device, batches: int = 3, batch: int = 32) -> float:
    """Forward-only ResNet-18 throughput on 112 px frames (random init; speed does not depend on it)."""
    model = get_backbone("resnet18", weights="random").eval().to(device)
    x = torch.randn(batch, 3, 1, 112, 112, device=device)  # (B, C, T=1, H, W): one frame per clip
    with torch.inference_mode():
        model.forward_features(x)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(batches):
            model.forward_features(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batches * batch / (time.perf_counter() - t)


def _epoch(fs: FeatureStore, source, head: str, train: np.ndarray, device: torch.device) -> dict[str, float]:
    cfg = TrainConfig(features=("synthetic",), head=head, epochs=1, batch_size=BATCH, warmup=0, patience=0,
                      device=str(device))
    torch.manual_seed(0)
    model = build_head(cfg, DIM, len(fs.classes))
    res = fit(model, source, train, np.array([], dtype=np.int64), cfg, device=device)
    return res.timing


@register_benchmark("heads", "head epoch rows/s, data wait fraction, cached features vs a backbone pass")
def bench_heads(args: argparse.Namespace) -> dict[str, float]:
    n = args.size or 20000
    device = torch.device(resolve_device("auto"))
    fs = _store(args, n)
    train = fs.split_rows("train")
    t = time.perf_counter()
    cache = FeatureCache.load(fs, ["synthetic"])
    metrics: dict[str, float] = {"cache_load_s": time.perf_counter() - t}
    print(f"   {n} videos x {CLIPS} x {DIM} fp16 ({cache.data.nbytes / 1e6:.0f} MB), {len(train)} train rows, "
          f"{device}, {torch.get_num_threads()} torch threads, load average {os.getloadavg()[0]:.1f}; "
          f"cache loaded in {metrics['cache_load_s']:.1f} s")
    fps = _backbone_frames_per_s(device)
    backbone_s = n * CLIPS / fps
    metrics.update(backbone_frames_per_s=fps, backbone_pass_s=backbone_s)
    print(f"   resnet18 @112 px forward: {fps:,.0f} frames/s -> one pass over {n} videos x {CLIPS} frames "
          f"~{backbone_s:,.0f} s (decoding not counted)")
    print(f"   {'head':<18}{'rows/s':>10}{'epoch(all) s':>14}{'wait (RAM)':>12}{'wait (stream)':>15}"
          f"{'cached_speedup':>16}")
    memory = MemorySource(cache)
    stream = StreamSource(fs, ["synthetic"])
    for head in HEADS:
        timing = _epoch(fs, memory, head, train, device)
        epoch_all = n / timing["rows_per_s"]
        m = {"rows_per_s": timing["rows_per_s"], "data_wait_fraction": timing["data_wait_fraction"],
             "epoch_s": epoch_all, "cached_speedup": backbone_s / epoch_all}
        if head in STREAMED:
            st = _epoch(fs, stream, head, train, device)
            m["stream_rows_per_s"], m["stream_data_wait_fraction"] = st["rows_per_s"], st["data_wait_fraction"]
        metrics.update({f"{head}_{k}": v for k, v in m.items()})
        wait_stream = f"{m['stream_data_wait_fraction']:.3f}" if head in STREAMED else "-"
        print(f"   {head:<18}{m['rows_per_s']:>10,.0f}{epoch_all:>14.1f}{m['data_wait_fraction']:>12.3f}"
              f"{wait_stream:>15}{m['cached_speedup']:>15,.0f}x")
    waits = [metrics[f"{h}_{k}"] for h in STREAMED for k in ("data_wait_fraction", "stream_data_wait_fraction")]
    metrics["vlad_data_wait_fraction_max"] = max(waits)
    metrics["cached_speedup_min"] = min(metrics[f"{h}_cached_speedup"] for h in HEADS)
    print(f"   worst NetVLAD/NeXtVLAD data_wait_fraction {metrics['vlad_data_wait_fraction_max']:.3f} "
          f"(target < {TARGET_WAIT}); worst cached_speedup {metrics['cached_speedup_min']:,.0f}x "
          f"(target >= {TARGET_SPEEDUP:,.0f}x)")
    return metrics
