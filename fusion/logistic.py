"""``logistic``: one scikit-learn logistic regression per class over that class's input scores.

Features of class ``c`` (standardised on the fit rows): the log-odds each input run gives
class ``c`` (unavailable entries filled with the mean of the available runs, see
:meth:`StackInputs.filled`) and one 0/1 availability column per run. We chose the class's
own scores over all ``M * C`` scores: with 40 classes and 3 runs the wider model scored
lower on held-out rows (it over-fits on the many weak cross-class columns) and took ~4x as
long, and it grows with C^2 for 300+ classes. Log-odds, not probabilities: if the runs'
errors are independent given the label, the best combination is linear in log-odds.

A class without positives (or negatives) among the fit rows gets its constant prior.
:func:`out_of_fold_margin` gives the cross-fitted margins that ``xgboost`` starts from.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from fusion._settings import SettingsMixin
from fusion.errors import FusionError
from fusion.inputs import EPS, StackInputs
from fusion.registry import Fuser, register_fusion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LogisticSettings(SettingsMixin):
    """Settings of the per-class logistic stacker.

    Attributes:
        c: Inverse L2 strength (scikit-learn's ``C``) on standardised features.
        max_iter: Solver iterations (``newton-cholesky``: a handful suffice).
        availability: Add one availability column per run.
    """

    c: float = 1.0
    max_iter: int = 100
    availability: bool = True

    def __post_init__(self) -> None:
        if self.c <= 0 or self.max_iter < 1:
            raise FusionError(f"logistic fusion needs c > 0 (--logistic-c / [logistic] c) and max_iter >= 1 "
                              f"([logistic] max_iter), got {self.c}, {self.max_iter}")


def linear_features(x: StackInputs, availability: bool) -> np.ndarray:
    """``(n, C, F)`` per-class features: F = M log-odds (+ M availability columns)."""
    feats = x.filled_logits().transpose(0, 2, 1)  # (n, M, C) -> (n, C, M)
    if not availability:
        return feats
    avail = np.broadcast_to(x.available[:, None, :], feats.shape).astype(np.float32)  # (n, M) -> (n, C, M)
    return np.concatenate([feats, avail], axis=2)  # -> (n, C, 2M)


def feature_owner(n_models: int, availability: bool) -> np.ndarray:
    """``(F,)`` the input run each column of :func:`linear_features` belongs to."""
    owner = np.arange(n_models)
    return np.concatenate([owner, owner]) if availability else owner


@register_fusion("logistic")
class LogisticFusion(Fuser):
    """Per-class logistic regression on the class's input log-odds and the runs' availability."""

    Settings = LogisticSettings

    def __init__(self, settings: LogisticSettings | None = None) -> None:
        super().__init__(settings)
        self.coef_: np.ndarray | None = None  # (C, F) on standardised features
        self.intercept_: np.ndarray | None = None  # (C,)
        self.mu_: np.ndarray | None = None  # (C, F)
        self.sd_: np.ndarray | None = None  # (C, F)
        self.names_: tuple[str, ...] = ()

    def fit(self, x: StackInputs, labels: np.ndarray) -> LogisticFusion:
        feats = linear_features(x, self.settings.availability)
        labels = np.asarray(labels)
        self.mu_ = feats.mean(axis=0)
        sd = feats.std(axis=0)
        self.sd_ = np.where(sd > 0, sd, 1.0)
        z = (feats - self.mu_) / self.sd_
        n_classes, n_feats = self.mu_.shape
        self.coef_ = np.zeros((n_classes, n_feats))
        self.intercept_ = np.zeros(n_classes)
        for c in range(n_classes):
            y = labels[:, c]
            if y.min() == y.max():
                prior = np.clip(y.mean(), EPS, 1 - EPS)
                self.intercept_[c] = np.log(prior / (1 - prior))
                continue
            lr = LogisticRegression(C=self.settings.c, solver="newton-cholesky", max_iter=self.settings.max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                lr.fit(z[:, c, :], y)
            self.coef_[c], self.intercept_[c] = lr.coef_[0], lr.intercept_[0]
        self.names_ = x.names
        return self

    def _standardised(self, x: StackInputs) -> np.ndarray:
        if self.coef_ is None:
            raise FusionError("logistic fusion is not fitted; call fit() first")
        if x.names != self.names_:
            raise FusionError(f"logistic fusion was fitted on runs {self.names_}, not {x.names}")
        feats = linear_features(x, self.settings.availability)
        return (feats - self.mu_) / self.sd_

    def margin(self, x: StackInputs) -> np.ndarray:
        """``(n, C)`` log-odds."""
        z = self._standardised(x)
        return (np.einsum("ncf,cf->nc", z, self.coef_) + self.intercept_).astype(np.float32)  # (n, C, F) -> (n, C)

    def predict(self, x: StackInputs) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-self.margin(x)))).astype(np.float32)

    def contributions(self, x: StackInputs) -> np.ndarray:
        z = self._standardised(x) * self.coef_  # (n, C, F)
        out = np.zeros((len(x), x.n_models, x.n_classes), np.float32)
        for f, m in enumerate(feature_owner(x.n_models, self.settings.availability)):
            out[:, m, :] += z[:, :, f]
        return out

    def record(self) -> dict[str, Any]:
        rec = super().record()
        if self.coef_ is not None:
            rec["coef"] = np.round(self.coef_, 5).tolist()
            rec["intercept"] = np.round(self.intercept_, 5).tolist()
        return rec


def out_of_fold_margin(settings: LogisticSettings, x: StackInputs, labels: np.ndarray, *, folds: int,
                       seed: int) -> tuple[np.ndarray, LogisticFusion]:
    """Cross-fitted logistic margins of the rows of ``x`` and the stacker fitted on all of them.

    Row ``i``'s margin comes from a stacker fitted on the other ``folds - 1`` folds, so a model
    trained on top of it (the xgboost residual trees) never sees a margin that knew row ``i``.

    Returns:
        ``(margin (n, C) float32, LogisticFusion fitted on every row)``.
    """
    if folds < 2:
        raise FusionError(f"cross-fitting needs at least 2 folds, got {folds}")
    n = len(x)
    fold = np.random.default_rng(seed).permutation(n) % folds
    margin = np.zeros((n, x.n_classes), np.float32)
    for k in range(folds):
        held = fold == k
        model = LogisticFusion(settings).fit(x.take(np.flatnonzero(~held)), labels[~held])
        margin[held] = model.margin(x.take(np.flatnonzero(held)))
    return margin, LogisticFusion(settings).fit(x, labels)
