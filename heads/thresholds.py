"""Per-class decision thresholds for ranking scores (LSEP "with thresholds", Li et al. 2017).

A ranking loss (LSEP, WARP) orders the classes of a video but says nothing about where the
label set ends; its scores are unnormalised, and LSEP is even blind to a per-video shift
(``s + u`` costs the same as ``s``). :func:`fit_thresholds` learns the cut on held-out scores
(out-of-fold train predictions) with :class:`~heads.losses.ThresholdHead` and
:func:`~heads.losses.threshold_loss` (``mean BCE(s - theta, t)``)::

    scores (N, C) --features--> ThresholdHead: theta = W f + b --> (N, C) thresholds
      "per_class":   f = 1                    one constant threshold per class (W f + b = const)
      "from_scores": f = standardised scores  thresholds follow the video's score vector

Training: full-batch Adam for ``epochs`` steps on the BCE of ``s - theta``, the head's
weights initialised from ``seed`` (the global torch RNG is left alone) and its bias shifted
to each class's mean score, so training starts near the scores whatever their scale. The
standardisation of "from_scores" is folded back into ``W`` and ``b``, so the fitted
:class:`ThresholdModel` is plain ``theta = scores @ weight.T + bias`` (``weight (C, 1)``
against a column of ones for "per_class"). Cost O(epochs N C F), F = 1 or C.

:func:`decision_metrics` scores label sets (micro/macro precision, recall, F1 as
scikit-learn's ``precision_recall_fscore_support(..., zero_division=0)``, and the mean
number of labels predicted per video); :func:`fixed_threshold` is the baseline
``sigmoid(score) > p``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from heads.losses import ThresholdHead, threshold_loss
from heads.metrics import _prepare
from store.errors import SettingsError

logger = logging.getLogger(__name__)

__all__ = [
    "THRESHOLD_MODES",
    "ThresholdModel",
    "decision_metrics",
    "fit_thresholds",
    "fixed_threshold",
]

ThresholdMode = Literal["per_class", "from_scores"]
#: The feature vectors ThresholdHead is fed here: a constant 1, or the score vector.
THRESHOLD_MODES = ("per_class", "from_scores")


@dataclass(frozen=True, eq=False)
class ThresholdModel:
    """Fitted thresholds ``theta = f @ weight.T + bias`` (``f`` = 1 or the scores).

    Attributes:
        mode: ``"per_class"`` or ``"from_scores"`` (see the module docstring).
        weight: ``(C, 1)`` for "per_class" (zeros from :func:`fit_thresholds`, which puts
            the thresholds in ``bias``), ``(C, C)`` for "from_scores", float64.
        bias: ``(C,)`` float64.
    """

    mode: str
    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        if self.mode not in THRESHOLD_MODES:
            raise SettingsError(f"mode must be one of {THRESHOLD_MODES}, got {self.mode!r}")
        weight = np.asarray(self.weight, dtype=np.float64)
        bias = np.asarray(self.bias, dtype=np.float64)
        c = bias.shape[0] if bias.ndim == 1 else -1
        want = (c, 1 if self.mode == "per_class" else c)
        if c < 1 or weight.shape != want:
            raise SettingsError(
                f"a {self.mode} ThresholdModel needs bias (C,) and weight {want[0], want[1]} with "
                f"C >= 1, got {bias.shape} and {weight.shape}"
            )
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)

    @property
    def num_classes(self) -> int:
        """C, the number of classes the model was fitted on."""
        return int(self.bias.shape[0])

    def thresholds(self, scores: np.ndarray) -> np.ndarray:
        """Thresholds ``(N, C)`` float64 for scores ``(N, C)``."""
        s = _check_scores(scores, self.num_classes)
        if self.mode == "per_class":
            return np.broadcast_to(self.weight[:, 0] + self.bias, s.shape).copy()
        return s @ self.weight.T + self.bias  # (N, C) x (C, C) -> (N, C)

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Decisions ``scores > thresholds(scores)``, ``(N, C)`` bool."""
        s = _check_scores(scores, self.num_classes)
        return s > self.thresholds(s)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for a prediction run's attrs)."""
        return {"mode": self.mode, "weight": self.weight.tolist(), "bias": self.bias.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdModel:
        """Inverse of :meth:`to_dict`."""
        return cls(data["mode"], np.asarray(data["weight"]), np.asarray(data["bias"]))


def _check_scores(scores: np.ndarray, num_classes: int) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != num_classes:
        raise ValueError(
            f"expected scores (N, {num_classes}) for a model fitted on {num_classes} classes, "
            f"got shape {s.shape}"
        )
    return s


def fit_thresholds(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    mode: str = "per_class",
    epochs: int = 200,
    lr: float = 0.05,
    seed: int = 0,
) -> ThresholdModel:
    """Learn decision thresholds for ranking scores with ThresholdHead + threshold_loss.

    Args:
        scores: ``(N, C)`` held-out scores (e.g. out-of-fold predictions of an LSEP head).
        labels: ``(N, C)`` 0/1 (or bool) labels of the same videos.
        mode: ``"per_class"`` (one constant threshold per class) or ``"from_scores"``
            (thresholds a linear function of the video's score vector).
        epochs: full-batch Adam steps.
        lr: Adam learning rate (in score units per step, roughly).
        seed: seed of the head's initial weights; the same seed gives the same model.

    Returns:
        The fitted :class:`ThresholdModel`.

    Raises:
        ValueError: shapes differ, labels are not 0/1 or have no positive, NaN scores, an
            unknown mode, or ``epochs`` / ``lr`` not positive.
    """
    if mode not in THRESHOLD_MODES:
        raise ValueError(f"mode must be one of {THRESHOLD_MODES}, got {mode!r}")
    if epochs < 1 or not lr > 0:
        raise ValueError(f"epochs and lr must be positive, got {epochs} and {lr}")
    s, y = _prepare(scores, labels)
    if not np.isfinite(s).all():
        raise ValueError("scores contain inf; fix the model output before fitting thresholds")
    n, c = s.shape
    if mode == "per_class":
        mu, sd = np.zeros(1), np.ones(1)
        feats = np.ones((n, 1))
    else:
        mu, sd = s.mean(axis=0), s.std(axis=0)
        sd = np.where(sd > 0, sd, 1.0)  # a constant column stays a constant (zero) feature
        feats = (s - mu) / sd  # (N, C), standardised for the optimiser
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ThresholdHead(feats.shape[1], c).double()
    with torch.no_grad():
        head.linear.bias += torch.from_numpy(s.mean(axis=0))  # start at each class's mean score
    s_t, y_t, f_t = (torch.from_numpy(a) for a in (s, y.astype(np.float64), feats))
    optimiser = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = threshold_loss(s_t, head(f_t), y_t)
        loss.backward()
        optimiser.step()
    logger.info("fit_thresholds(%s): N=%d C=%d, final BCE %.4f", mode, n, c, loss.item())
    w = head.linear.weight.detach().numpy() / sd  # (C, F): undo the standardisation
    b = head.linear.bias.detach().numpy() - w @ mu  # (C,)
    if mode == "per_class":  # f = 1: fold the weight into the bias, theta = b
        w, b = np.zeros_like(w), b + w[:, 0]
    return ThresholdModel(mode, w, b)


def fixed_threshold(scores: np.ndarray, probability: float = 0.5) -> np.ndarray:
    """The baseline decisions ``sigmoid(scores) > probability``, ``(N, C)`` bool.

    Computed as ``scores > log(p / (1 - p))`` (0 for p = 0.5), exact for any score scale.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"expected scores (N, C), got shape {s.shape}")
    return s > math.log(probability / (1.0 - probability))


def decision_metrics(decisions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of label sets, micro and macro, and labels per video.

    Per class, ``P = tp / (tp + fp)``, ``R = tp / (tp + fn)``, ``F1 = 2 tp / (2 tp + fp + fn)``,
    each 0 where its denominator is 0 (scikit-learn's ``zero_division=0``); macro = their
    mean over all C classes; micro = the same on the counts summed over classes.

    Args:
        decisions: ``(N, C)`` bool (or 0/1) predicted label sets.
        labels: ``(N, C)`` 0/1 (or bool) true labels.

    Returns:
        ``micro_precision``, ``micro_recall``, ``micro_f1``, ``macro_precision``,
        ``macro_recall``, ``macro_f1``, ``labels_per_video`` (mean predicted labels per video)
        and ``true_labels_per_video``.
    """
    d, y = _prepare(decisions, labels)
    if not np.isin(d, (0.0, 1.0)).all():
        raise ValueError(
            "decisions must be bool or 0/1; threshold scores first (ThresholdModel.predict, "
            "fixed_threshold)"
        )
    d = d.astype(bool)
    tp = (d & y).sum(axis=0).astype(np.float64)  # (N, C) -> (C,)
    fp = (d & ~y).sum(axis=0).astype(np.float64)
    fn = (~d & y).sum(axis=0).astype(np.float64)

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    out = {}
    for prefix, (t, p, n) in (
        ("micro", (tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True))),
        ("macro", (tp, fp, fn)),
    ):
        out[f"{prefix}_precision"] = float(ratio(t, t + p).mean())
        out[f"{prefix}_recall"] = float(ratio(t, t + n).mean())
        out[f"{prefix}_f1"] = float(ratio(2 * t, 2 * t + p + n).mean())
    out["labels_per_video"] = float(d.sum(axis=1).mean())
    out["true_labels_per_video"] = float(y.sum(axis=1).mean())
    return out
