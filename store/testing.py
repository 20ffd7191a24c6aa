"""Seeded synthetic stores for tests, benchmarks and the first-run demo.

The features carry the labels (a video's clips are noisy sums of its classes' prototype
vectors), so a head trained on them learns something measurable, and some videos have fewer
valid clips than K, so masking is exercised. :func:`make_clustered_store` writes a store of
any size block by block, with clustered, embedding-like features (for the scale benchmark).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from store._index_vectors import Progress
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


def make_clustered_store(path: str | Path, *, n_videos: int, n_classes: int = 313, clips: int = 8, dim: int = 256,
                         n_concepts: int | None = None, feature_set: str = "clustered", seed: int = 0,
                         spread: float = 0.7, clip_spread: float = 0.4, block: int = 16384, chunk_rows: int = 256,
                         overwrite: bool = True, progress: Progress | None = None) -> FeatureStore:
    """A store of clustered, embedding-like clip features whose labels follow the clusters, written
    ``block`` rows at a time (append, then write), so memory stays O(block) at any ``n_videos``.

    Each video belongs to one of ``n_concepts`` (default ``2 C``) concepts of uneven size
    (Dirichlet); concept ``k`` carries class ``k mod C``, and 30% of videos also carry class
    ``(7 k + 3) mod C``. A video's vector is its concept's centre plus Gaussian noise whose norm is
    ``spread`` x the centre's (as :func:`store.index.clustered_vectors`); each clip adds noise of
    ``clip_spread`` x the centre's norm. Splits are 70/15/15 train/val/test. The same arguments
    give the same store.
    """
    c = n_classes
    n_concepts = n_concepts or 2 * c
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_concepts, dim), dtype=np.float32)
    weights = rng.dirichlet(np.full(n_concepts, 2.0))
    fs = FeatureStore.create(path, classes=[f"class_{i:03d}" for i in range(c)], overwrite=overwrite)
    spec = FeatureSetSpec(clips=clips, dim=dim, backbone="synthetic", modality="synthetic", chunk_rows=chunk_rows,
                          sampling={"seed": seed, "spread": spread, "clip_spread": clip_spread,
                                    "n_concepts": n_concepts})
    fs.create_feature_set(feature_set, spec)
    starts = range(0, n_videos, block)
    for start in progress(starts, desc="building", unit="block") if progress is not None else starts:
        n = min(block, n_videos - start)
        r = np.random.default_rng([seed, start])
        concept = r.choice(n_concepts, size=n, p=weights)
        labels = np.zeros((n, c), np.uint8)
        labels[np.arange(n), concept % c] = 1
        second = r.random(n) < 0.3
        labels[np.flatnonzero(second), (7 * concept[second] + 3) % c] = 1
        ids = [f"vid{i:08d}" for i in range(start, start + n)]
        rows = fs.append_videos(pd.DataFrame({"id": ids, "path": [f"synthetic/{i}.mp4" for i in ids],
                                              "split": r.choice(["train", "val", "test"], size=n, p=[0.7, 0.15, 0.15]),
                                              "n_frames": 75, "fps": 25.0, "duration": 3.0,
                                              "has_audio": False}), labels)
        video = centres[concept] + np.float32(spread) * r.standard_normal((n, dim), dtype=np.float32)  # (n, D)
        data = video[:, None, :] + np.float32(clip_spread) * r.standard_normal((n, clips, dim), dtype=np.float32)
        with fs.feature_set(feature_set).writer() as w:  # opened after the append: it sees the new rows
            w.write_rows(rows, data, valid=np.ones((n, clips), bool))  # (n, K, D)
    return fs
