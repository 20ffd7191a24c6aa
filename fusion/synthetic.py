"""Seeded synthetic prediction runs for fusion tests, the benchmark and a first look.

Three runs mimic the RGB, flow and audio heads of the demo set. Each class belongs to a
family that decides which run can see it:

- ``appearance``: RGB sees the class well, flow and audio barely;
- ``motion``: flow sees it well, RGB and audio barely;
- ``sound``: audio sees it well, but only for videos with an audio track (``has_audio``);
  for the others the audio run outputs noise, and RGB/flow see the class weakly;
- ``action_direction``: the class is an action done in one direction ("pushing left").
  RGB sees the action but not the direction; flow sees the direction (left-ward motion)
  but not the action; many negatives show the action in another direction or the
  direction in another action. Only a combination of the two scores finds the class.

Runs differ in calibration (the audio head is over-confident), as real heads do. Train
rows get a fold id (out-of-fold predictions, as ``heads.train --folds k`` writes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from store.feature_store import FeatureStore
from store.testing import synthetic_labels

FAMILIES = ("appearance", "motion", "sound", "action_direction")
MODELS = ("rgb", "flow", "audio")


@dataclass(frozen=True, eq=False)
class SyntheticPredictions:
    """Labels, splits and per-model probabilities of a synthetic fusion problem.

    Attributes:
        labels: ``(N, C)`` uint8 multi-hot.
        split: ``(N,)`` ``train`` / ``val`` / ``test``.
        has_audio: ``(N,)`` bool.
        family: ``(C,)`` family name of each class.
        scores: run name -> ``(N, C)`` float32 probabilities.
        fold: ``(N,)`` int16 fold of each train row (-1 elsewhere), shared by the runs.
    """

    labels: np.ndarray
    split: np.ndarray
    has_audio: np.ndarray
    family: np.ndarray
    scores: dict[str, np.ndarray]
    fold: np.ndarray


def class_families(n_classes: int, fractions: tuple[float, ...] = (0.35, 0.25, 0.2, 0.2)) -> np.ndarray:
    """``(C,)`` family of each class, in contiguous blocks of the given fractions."""
    bounds = np.round(np.cumsum((0.0,) + fractions) / sum(fractions) * n_classes).astype(int)
    fam = np.empty(n_classes, dtype=object)
    for name, a, b in zip(FAMILIES, bounds[:-1], bounds[1:]):
        fam[a:b] = name
    return fam


def synthetic_predictions(n: int = 9000, n_classes: int = 40, *, seed: int = 0, folds: int = 5,
                          audio_fraction: float = 0.7, strong: float = 2.0, weak: float = 0.5,
                          direction: float = 1.0, confuser_rate: float = 0.15,
                          clarity: float = 0.5) -> SyntheticPredictions:
    """Generate a fusion problem (see the module docstring).

    Args:
        n: Videos.
        n_classes: Classes (at least 4, so every family has one).
        seed: Seed of everything.
        folds: Fold count of the out-of-fold train predictions.
        audio_fraction: Fraction of videos with an audio track.
        strong: Logit separation of a run that sees the class.
        weak: Logit separation of a run that barely sees it.
        confuser_rate: For ``action_direction`` classes, the rate of negatives showing the
            action (other direction) and, separately, the direction (other action).
    """
    if n_classes < 4:
        raise ValueError(f"need at least 4 classes (one per family), got {n_classes}")
    rng = np.random.default_rng(seed)
    labels = synthetic_labels(n, n_classes, rng)
    y = labels.astype(bool)
    split = rng.choice(np.array(["train", "val", "test"], dtype=object), size=n, p=[0.7, 0.15, 0.15])
    has_audio = rng.random(n) < audio_fraction
    family = class_families(n_classes)
    # what each run perceives per class: the label itself, or for action_direction a latent part of it
    action, moving = y.copy(), y.copy()
    pair = family == "action_direction"
    u = rng.random((n, int(pair.sum())))
    action[:, pair] |= u < confuser_rate  # the action, in another direction
    moving[:, pair] |= (u >= confuser_rate) & (u < 2 * confuser_rate)  # the direction, another action
    sep = {m: np.full(n_classes, weak) for m in MODELS}
    sep["rgb"][np.isin(family, ["appearance", "action_direction"])] = strong
    sep["flow"][family == "motion"] = strong
    sep["flow"][pair] = direction
    sep["audio"][family == "sound"] = strong + 0.5
    sep["audio"][pair] = 0.0
    seen = {"rgb": np.where(pair, action, y), "flow": np.where(pair, moving, y), "audio": y}
    scale = {"rgb": 1.0, "flow": 1.0, "audio": 2.0}  # audio over-confident
    scores = {}
    clear = np.exp(clarity * rng.standard_normal((n, 1)))  # how clearly each video shows its content
    for m in MODELS:
        logit = clear * sep[m] * (2.0 * seen[m] - 1.0) - 2.5 + rng.standard_normal((n, n_classes))
        if m == "audio":
            logit[~has_audio] = -2.5 + 1.5 * rng.standard_normal((int((~has_audio).sum()), n_classes))
        scores[m] = (1.0 / (1.0 + np.exp(-scale[m] * logit))).astype(np.float32)
    fold = np.where(split == "train", rng.integers(0, folds, size=n), -1).astype(np.int16)
    return SyntheticPredictions(labels=labels, split=split, has_audio=has_audio, family=family,
                                scores=scores, fold=fold)


def make_synthetic_fusion_store(path: str | Path, *, n_videos: int = 9000, n_classes: int = 40, seed: int = 0,
                                folds: int = 5, overwrite: bool = True, **kwargs: float) -> FeatureStore:
    """Create a store holding the three runs ``rgb``, ``flow`` and ``audio`` of :func:`synthetic_predictions`.

    Each run's attrs record ``modality``, ``score_type="sigmoid"``, ``folds`` and
    ``train_splits=["train"]``; its fold array marks the out-of-fold train rows.
    """
    syn = synthetic_predictions(n_videos, n_classes, seed=seed, folds=folds, **kwargs)
    classes = [f"{fam}_{i:03d}" for i, fam in enumerate(syn.family)]
    fs = FeatureStore.create(path, classes=classes, overwrite=overwrite)
    table = pd.DataFrame({"id": [f"syn{i:07d}" for i in range(n_videos)], "path": "synthetic",
                          "split": syn.split, "has_audio": syn.has_audio})
    fs.append_videos(table, syn.labels)
    for m, s in syn.scores.items():
        fs.write_predictions(m, s, attrs={"head": "synthetic", "modality": m, "score_type": "sigmoid",
                                          "folds": folds, "train_splits": ["train"], "seed": seed}, fold=syn.fold)
    return fs
