"""``weighted``: a convex combination of the input probabilities with fitted per-run weights.

The weights ``w`` (one per input run, shared by all classes; or one vector per class with
``per_class=True``) are non-negative and sum to 1; they minimise the binary cross-entropy of
``sum_m w_m p_m`` against the labels over every fit (row, class) pair (SLSQP, analytic
gradient). Cross-entropy is a proper scoring rule, so
when the labels really are drawn from such a mixture the fit recovers its weights; mAP alone
could not (it is blind to a common scale and piecewise constant in ``w``). Unavailable
entries are filled with the mean of the available runs (:meth:`StackInputs.filled`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from fusion._settings import SettingsMixin
from fusion.errors import FusionError
from fusion.inputs import EPS, StackInputs
from fusion.registry import Fuser, register_fusion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightedSettings(SettingsMixin):
    """Settings of the weighted average.

    Attributes:
        per_class: Fit one weight vector per class instead of one shared by all classes.
        max_iter: SLSQP iterations.
        tol: SLSQP tolerance on the loss.
    """

    per_class: bool = False
    max_iter: int = 200
    tol: float = 1e-9

    def __post_init__(self) -> None:
        if self.max_iter < 1 or self.tol <= 0:
            raise FusionError(f"weighted fusion needs max_iter >= 1 and tol > 0 ([weighted] max_iter, tol in "
                              f"--config), got {self.max_iter}, {self.tol}")


def fit_mixture_weights(p: np.ndarray, y: np.ndarray, *, max_iter: int = 200, tol: float = 1e-9) -> np.ndarray:
    """Weights on the simplex minimising the cross-entropy of ``p @ w`` against ``y``.

    Args:
        p: ``(K, M)`` probabilities of M sources for K (row, class) pairs.
        y: ``(K,)`` 0/1 labels.

    Returns:
        ``(M,)`` non-negative weights summing to 1.
    """
    p = p.astype(np.float64)
    y = y.astype(np.float64)
    m = p.shape[1]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        f = np.clip(p @ w, EPS, 1 - EPS)  # (K, M) @ (M,) -> (K,)
        nll = -np.mean(y * np.log(f) + (1 - y) * np.log(1 - f))
        dfdl = (f - y) / (f * (1 - f)) / len(f)  # d loss / d f
        return float(nll), p.T @ dfdl  # (M, K) @ (K,) -> (M,)

    w0 = np.full(m, 1.0 / m)
    res = minimize(loss, w0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m, tol=tol,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
                   options={"maxiter": max_iter})
    if not res.success:
        log.warning("weighted fusion: SLSQP stopped early (%s); using its last weights", res.message)
    w = np.clip(res.x, 0.0, None)
    return w / w.sum() if w.sum() > 0 else w0


@register_fusion("weighted")
class WeightedFusion(Fuser):
    """``sum_m w_m p_m`` with ``w >= 0``, ``sum w = 1`` fitted by cross-entropy."""

    Settings = WeightedSettings

    def __init__(self, settings: WeightedSettings | None = None) -> None:
        super().__init__(settings)
        self.weights_: np.ndarray | None = None  # (C, M)
        self.names_: tuple[str, ...] = ()

    def fit(self, x: StackInputs, labels: np.ndarray) -> WeightedFusion:
        s = self.settings
        filled, labels = x.filled(), np.asarray(labels)
        if s.per_class:
            self.weights_ = np.stack([fit_mixture_weights(filled[:, :, c], labels[:, c], max_iter=s.max_iter, tol=s.tol)
                                      for c in range(x.n_classes)])
        else:
            p = filled.transpose(0, 2, 1).reshape(-1, x.n_models)  # (n, M, C) -> (n * C, M)
            w = fit_mixture_weights(p, labels.reshape(-1), max_iter=s.max_iter, tol=s.tol)
            self.weights_ = np.broadcast_to(w, (x.n_classes, x.n_models)).copy()
            log.info("weighted fusion weights: %s", dict(zip(x.names, np.round(w, 4))))
        self.names_ = x.names
        return self

    def _weights(self, x: StackInputs) -> np.ndarray:
        if self.weights_ is None:
            raise FusionError("weighted fusion is not fitted; call fit() first")
        if x.names != self.names_:
            raise FusionError(f"weighted fusion was fitted on runs {self.names_}, not {x.names}")
        return self.weights_.astype(np.float32)

    def predict(self, x: StackInputs) -> np.ndarray:
        return np.einsum("nmc,cm->nc", x.filled(), self._weights(x))  # (n, M, C) x (C, M) -> (n, C)

    def contributions(self, x: StackInputs) -> np.ndarray:
        return x.filled() * self._weights(x).T[None, :, :]  # (C, M) -> (1, M, C)

    def record(self) -> dict[str, Any]:
        rec = super().record()
        if self.weights_ is not None:
            w = self.weights_
            rec["weights"] = {n: (np.round(w[:, i], 5).tolist() if self.settings.per_class else float(w[0, i]))
                              for i, n in enumerate(self.names_)}
        return rec
