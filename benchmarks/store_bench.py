"""Store I/O: our Zarr layout and torch reader vs one .npy per video and a raw np.memmap.

All three layouts hold the same N x K x D float16 features; each epoch visits every row
once in a shuffled order, in mini-batches of 256 rows, materialised as float32 arrays
(what a training step consumes; all three convert with torch's SIMD float16 -> float32).
Warm page cache: each layout is read once before timing. The scan reads every chunk in
storage order, in the stored float16.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import numpy as np
import torch

from benchmarks.registry import register_benchmark
from store import FeatureSetSpec, FeatureStore
from store.readers import ChunkShuffleDataset

BATCH = 256


def _dir_bytes(path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _features(n: int, k: int, d: int, seed: int = 0) -> np.ndarray:
    """Embedding-like fp16 features: non-negative (post-ReLU, average-pooled) with structure."""
    rng = np.random.default_rng(seed)
    protos = np.abs(rng.standard_normal((64, d), dtype=np.float32))
    out = np.empty((n, k, d), np.float16)
    for s in range(0, n, 2048):
        e = min(s + 2048, n)
        base = protos[rng.integers(0, 64, e - s)]
        out[s:e] = np.maximum(base[:, None, :] + 0.5 * rng.standard_normal((e - s, k, d), dtype=np.float32), 0)
    return out


def _epoch_rows_per_s(fetch, n: int, seed: int) -> float:
    order = np.random.default_rng(seed).permutation(n)
    t = time.perf_counter()
    for b in range(0, n, BATCH):
        x = fetch(np.sort(order[b:b + BATCH]))
        assert x.dtype == torch.float32
    return n / (time.perf_counter() - t)


@register_benchmark("store", "write / scan / shuffled-epoch speed of the store vs .npy-per-video and np.memmap")
def bench_store(args: argparse.Namespace) -> dict[str, float]:
    n, k, d = args.size or 20000, 8, 512
    torch.set_num_threads(1)  # conversions are memory-bound; extra threads only add contention
    work = args.workdir / "store"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    x = _features(n, k, d)
    mb = x.nbytes / 1e6
    print(f"   {n} videos x {k} clips x {d} float16 = {mb:.0f} MB")
    metrics: dict[str, float] = {}

    # --- our store: write, full scan, shuffled epoch through the torch reader
    fs = FeatureStore.create(work / "bench.zarr", classes=["a", "b"])
    import pandas as pd
    fs.append_videos(pd.DataFrame({"id": [f"v{i}" for i in range(n)], "path": "x", "split": "train"}),
                     np.eye(2, dtype=np.uint8)[np.arange(n) % 2])
    fset = fs.create_feature_set("f", FeatureSetSpec(clips=k, dim=d))
    t = time.perf_counter()
    with fset.writer() as w:
        for s in range(0, n, fset.chunk_rows):
            e = min(s + fset.chunk_rows, n)
            w.write_rows(np.arange(s, e), x[s:e])
    metrics["write_MBps"] = mb / (time.perf_counter() - t)
    for _ in fset.iter_chunks():  # warm the page cache
        pass
    t = time.perf_counter()
    total = sum(data.nbytes for _, data, _ in fset.iter_chunks(dtype=None))  # the stored float16 values
    metrics["scan_MBps"] = total / 1e6 / (time.perf_counter() - t)
    ds = ChunkShuffleDataset(fs, ["f"], split="all", batch_size=BATCH, buffer_chunks=8, seed=0)
    for _ in ds:  # warm
        pass
    ds.set_epoch(1)
    t = time.perf_counter()
    rows = sum(len(b["rows"]) for b in ds)
    metrics["epoch_rows_per_s"] = rows / (time.perf_counter() - t)
    metrics["compression_ratio"] = x.nbytes / _dir_bytes(fset.path / "data" / "c")

    # --- baseline (a): one .npy file per video, as today's extraction tools write
    npy = work / "npy"
    npy.mkdir()
    for i in range(n):
        np.save(npy / f"v{i}.npy", x[i])

    def fetch_npy(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.load(npy / f"v{i}.npy") for i in idx])).float()

    _epoch_rows_per_s(fetch_npy, min(n, 4000), 0)  # warm
    metrics["npy_per_video_rows_per_s"] = _epoch_rows_per_s(fetch_npy, n, 1)

    # --- baseline (b): one uncompressed np.memmap (the near-limit)
    mm = np.lib.format.open_memmap(work / "all.npy", mode="w+", dtype=np.float16, shape=x.shape)
    mm[:] = x
    mm.flush()
    mm = np.load(work / "all.npy", mmap_mode="r")
    def fetch_memmap(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mm[idx]).float()

    _epoch_rows_per_s(fetch_memmap, n, 0)  # warm
    metrics["memmap_rows_per_s"] = _epoch_rows_per_s(fetch_memmap, n, 1)

    for key, v in metrics.items():
        print(f"   {key:28s} {v:12,.1f}")
    print(f"   epoch vs .npy-per-video: {metrics['epoch_rows_per_s'] / metrics['npy_per_video_rows_per_s']:.1f}x "
          f"(target >= 10x); vs memmap: {metrics['epoch_rows_per_s'] / metrics['memmap_rows_per_s']:.2f}x "
          f"(target >= 0.25x); scan {metrics['scan_MBps'] / 1000:.2f} GB/s (target >= 1.5)")
    shutil.rmtree(work, ignore_errors=True)
    return metrics
