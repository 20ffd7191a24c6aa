"""Seeded synthetic stores for tests, benchmarks and the first-run demo.

The features carry the labels (a video's clips are noisy sums of its classes' prototype
vectors), so a head trained on them learns something measurable, and some videos have fewer
valid clips than K, so masking is exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from store.feature_store import FeatureStore
from store.schema import FeatureSetSpec


def synthetic_labels(n: int, n_classes: int, rng: np.random.Generator, max_labels: int = 3) -> np.ndarray:
    """(n, C) multi-hot with 1..max_labels labels per row, class frequencies skewed (Zipf-like)."""
    p = 1.0 / np.arange(1, n_classes + 1) ** 0.5
    p /= p.sum()
    labels = np.zeros((n, n_classes), np.uint8)
    counts = rng.integers(1, max_labels + 1, size=n)
    for i, k in enumerate(counts):
        labels[i, rng.choice(n_classes, size=k, replace=False, p=p)] = 1
    return labels


def make_synthetic_store(path: str | Path, *, n_videos: int = 2000, n_classes: int = 20, clips: int = 8,
                         dim: int = 128, feature_set: str = "synthetic", seed: int = 0, noise: float = 1.0,
                         short_fraction: float = 0.1, chunk_rows: int = 256, compressor: str = "none",
                         overwrite: bool = True) -> FeatureStore:
    """Create a store with ``n_videos`` labelled videos and one fully written feature set.

    Splits are 70/15/15 train/val/test. A ``short_fraction`` of videos have between 1 and K-1
    valid clips (the rest of their K slots are padding).
    """
    rng = np.random.default_rng(seed)
    classes = [f"class_{i:03d}" for i in range(n_classes)]
    fs = FeatureStore.create(path, classes=classes, overwrite=overwrite)
    labels = synthetic_labels(n_videos, n_classes, rng)
    split = rng.choice(["train", "val", "test"], size=n_videos, p=[0.7, 0.15, 0.15])
    table = pd.DataFrame({
        "id": [f"vid{i:07d}" for i in range(n_videos)],
        "path": [f"synthetic/vid{i:07d}.mp4" for i in range(n_videos)],
        "split": split, "n_frames": 75, "fps": 25.0, "duration": 3.0, "has_audio": True,
    })
    fs.append_videos(table, labels)
    spec = FeatureSetSpec(clips=clips, dim=dim, backbone="synthetic", modality="synthetic",
                          sampling={"seed": seed, "noise": noise}, chunk_rows=chunk_rows, compressor=compressor)
    fset = fs.create_feature_set(feature_set, spec)
    protos = rng.standard_normal((n_classes, dim)).astype(np.float32)
    with fset.writer() as w:
        for start in range(0, n_videos, chunk_rows):
            stop = min(start + chunk_rows, n_videos)
            n = stop - start
            lab = labels[start:stop].astype(np.float32)
            signal = lab @ protos  # (n, C) @ (C, D) -> (n, D)
            data = signal[:, None, :] + noise * rng.standard_normal((n, clips, dim), dtype=np.float32)
            n_valid = np.where(rng.random(n) < short_fraction, rng.integers(1, clips, size=n), clips)
            valid = np.arange(clips)[None, :] < n_valid[:, None]  # (n, K)
            data[~valid] = 0
            times = np.stack([np.arange(clips) * 0.375, np.arange(clips) * 0.375 + 0.64], -1)
            w.write_rows(np.arange(start, stop), data, valid=valid,
                         times=np.broadcast_to(times, (n, clips, 2)).astype(np.float32))
    return fs
