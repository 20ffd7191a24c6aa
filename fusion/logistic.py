"""``logistic``: one L2 logistic regression per class over that class's input scores.

Features of class ``c`` (standardised on the fit rows): the log-odds each input run gives
class ``c`` (unavailable entries filled with the mean of the available runs, see
:meth:`StackInputs.filled`) and one 0/1 availability column per run. We chose the class's
own scores over all ``M * C`` scores: with 40 classes and 3 runs the wider model scored
lower on held-out rows (it over-fits on the many weak cross-class columns) and took ~4x as
long, and it grows with C^2 for 300+ classes. Log-odds, not probabilities: if the runs'
errors are independent given the label, the best combination is linear in log-odds.

All classes are fitted together by Newton's method with step halving, each iteration one pass
over the fit rows in row blocks (:func:`fusion.inputs.row_blocks`), so memory stays O(block)
whatever the number of rows; the objective is scikit-learn's ``LogisticRegression`` (L2,
intercept not penalised) and the coefficients match it (tested).
A class without positives (or negatives) among the fit rows gets its constant prior.
:func:`out_of_fold_margin` gives the cross-fitted margins that ``xgboost`` starts from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from scipy.special import expit

from fusion._settings import SettingsMixin
from fusion.errors import FusionError
from fusion.inputs import EPS, StackInputs, row_blocks
from fusion.registry import Fuser, register_fusion
from store.threads import current_threads, thread_map

log = logging.getLogger(__name__)
_NEWTON_TOL = 1e-6  # a class has converged when its Newton step moves no coefficient more than this
_R = TypeVar("_R")
_CACHE_BYTES = 256 << 20  # keep the standardised design blocks in RAM between Newton passes up to this size


@dataclass(frozen=True)
class LogisticSettings(SettingsMixin):
    """Settings of the per-class logistic stacker.

    Attributes:
        c: Inverse L2 strength (scikit-learn's ``C``) on standardised features.
        max_iter: Newton iterations (a handful suffice; each is one pass over the fit rows).
        availability: Add one availability column per run.
        n_jobs: Threads over the row blocks; 0 = the command's (:func:`store.threads.current_threads`:
            ``fusion.run --threads``, by default the free cores), 1 in a process that set none.
            The results do not depend on it (blocks are summed in row order).
    """

    c: float = 1.0
    max_iter: int = 100
    availability: bool = True
    n_jobs: int = 0

    def __post_init__(self) -> None:
        if self.c <= 0 or self.max_iter < 1 or self.n_jobs < 0:
            raise FusionError(f"logistic fusion needs c > 0 (--logistic-c / [logistic] c), max_iter >= 1 "
                              f"([logistic] max_iter) and n_jobs >= 0 ([logistic] n_jobs), got {self.c}, "
                              f"{self.max_iter}, {self.n_jobs}")


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

    def _threads(self) -> int:
        return self.settings.n_jobs or current_threads() or 1

    def _rows(self, x: StackInputs) -> list[slice]:
        """Consecutive row blocks of ``x`` whose ``(b, C, F)`` features are about a quarter of
        :data:`fusion.inputs.BLOCK_ELEMENTS` values: ~8 MB float64 arrays, which glibc serves from
        its heap again and again, where 32 MB ones were fresh ``mmap`` pages each time (the threaded
        fit then spent as much system CPU time faulting pages in as user time computing)."""
        width = x.n_classes * x.n_models * (2 if self.settings.availability else 1)
        return list(row_blocks(len(x), 4 * width))

    def _features(self, x: StackInputs, rows: slice) -> np.ndarray:
        """``(b, C, F)`` float64 features of ``rows`` of ``x``."""
        return linear_features(x.take(rows), self.settings.availability).astype(np.float64)

    def _map_blocks(self, x: StackInputs, fn: Callable[[np.ndarray], _R]) -> Iterator[_R]:
        """``fn(features of a row block)`` for every row block of ``x`` in row order, over
        ``n_jobs`` threads (NumPy releases the GIL on these arrays)."""
        return thread_map(lambda rows: fn(self._features(x, rows)), self._rows(x), self._threads())

    def fit(self, x: StackInputs, labels: np.ndarray) -> LogisticFusion:
        """Fit every class at once by Newton's method on sums over row blocks (memory O(block)).

        The objective of class ``c`` is scikit-learn's: ``C * sum_i logloss_i + |w|^2 / 2`` on
        standardised features, intercept not penalised; Newton steps that raise it are halved.
        """
        return self._fit(x, labels, None)

    def _fit(self, x: StackInputs, labels: np.ndarray, start: LogisticFusion | None) -> LogisticFusion:
        """:meth:`fit`, starting Newton from ``start``'s coefficients (a fit on similar rows) if given."""
        labels = np.asarray(labels)
        n = len(x)
        total = sum(self._map_blocks(x, lambda f: f.sum(axis=0)))  # (C, F)
        self.mu_ = total / n
        sq = sum(self._map_blocks(x, lambda f: ((f - self.mu_) ** 2).sum(axis=0)))
        sd = np.sqrt(sq / n)
        self.sd_ = np.where(sd > 0, sd, 1.0)
        n_classes, n_feats = self.mu_.shape
        prior = np.clip(labels.mean(axis=0, dtype=np.float64), EPS, 1 - EPS)
        active = labels.min(axis=0) != labels.max(axis=0)  # classes with positives and negatives
        w = np.zeros((n_classes, n_feats + 1))  # (C, F + 1): coefficients, then the intercept
        w[:, -1] = np.log(prior / (1 - prior))
        if start is not None:  # the optimum moves little between overlapping row sets: fewer iterations
            w[active, :-1], w[active, -1] = start.coef_[active], start.intercept_[active]
        step, best = np.zeros_like(w), np.full(n_classes, np.inf)
        cache = [] if n * n_classes * (n_feats + 1) * 8 <= _CACHE_BYTES else None
        todo = active.copy()
        for _ in range(self.settings.max_iter):
            if not todo.any():
                break
            loss, grad, hess = self._loss_grad_hess(x, labels, w, cache)
            worse = todo & (loss > best + 1e-12 * np.abs(best))
            ok = todo & ~worse
            newton = -np.linalg.solve(hess[ok], grad[ok][..., None])[..., 0]  # (C_ok, F + 1)
            step[ok], best[ok] = newton, loss[ok]
            w[ok] += newton
            step[worse] *= 0.5  # the last step overshot: go back half of it
            w[worse] -= step[worse]
            todo &= np.abs(step).max(axis=1) >= _NEWTON_TOL  # Newton converges quadratically: done
        if todo.any():
            log.warning("logistic fusion: %d classes not converged after %d Newton iterations", int(todo.sum()),
                        self.settings.max_iter)
        self.coef_, self.intercept_ = w[:, :-1].copy(), w[:, -1].copy()
        self.coef_[~active] = 0.0
        self.intercept_[~active] = np.log(prior / (1 - prior))[~active]
        self.names_ = x.names
        return self

    def _design(self, x: StackInputs, rows: slice) -> np.ndarray:
        """``(C, b, F + 1)`` standardised features of ``rows`` plus a ones column."""
        z = (self._features(x, rows) - self.mu_) / self.sd_
        return np.ascontiguousarray(np.concatenate([z, np.ones(z.shape[:2] + (1,))], axis=2).transpose(1, 0, 2))

    def _loss_grad_hess(self, x: StackInputs, labels: np.ndarray, w: np.ndarray,
                        cache: list | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Objective ``(C,)``, gradient ``(C, F + 1)`` and Hessian ``(C, F + 1, F + 1)`` at ``w``.

        The row blocks are computed over ``n_jobs`` threads and summed
        in row order (the same sums whatever the thread count). ``cache``: a list that keeps the
        design blocks between calls (filled on the first call); None: recomputed on every call.
        """
        n_classes, width = w.shape
        filled = bool(cache)
        keep = cache is not None and not filled

        def terms(item: tuple[slice, np.ndarray | None]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray,
                                                                    np.ndarray]:
            rows, zt = item
            if zt is None:
                zt = self._design(x, rows)
            y = labels[rows].T.astype(np.float64)  # (b, C) -> (C, b)
            eta = (zt @ w[:, :, None])[..., 0]  # (C, b, F + 1) @ (C, F + 1, 1) -> (C, b)
            p = expit(eta)
            loss = (np.logaddexp(0.0, eta) - y * eta).sum(axis=1)
            grad = ((p - y)[:, None, :] @ zt)[:, 0]  # (C, 1, b) @ (C, b, F + 1) -> (C, F + 1)
            hess = (zt * (p * (1.0 - p))[..., None]).transpose(0, 2, 1) @ zt  # (C, F + 1, b) @ (C, b, F + 1)
            return (zt if keep else None), loss, grad, hess

        items = cache if filled else [(rows, None) for rows in self._rows(x)]
        loss, grad, hess = np.zeros(n_classes), np.zeros((n_classes, width)), np.zeros((n_classes, width, width))
        for (rows, _), (zt, b_loss, b_grad, b_hess) in zip(items, thread_map(terms, items, self._threads())):
            loss += b_loss
            grad += b_grad
            hess += b_hess
            if keep:
                cache.append((rows, zt))
        c, coef = self.settings.c, w[:, :-1]
        diag = np.arange(width - 1)
        loss, grad, hess = c * loss + 0.5 * (coef**2).sum(axis=1), c * grad, c * hess
        grad[:, :-1] += coef
        hess[:, diag, diag] += 1.0
        return loss, grad, hess

    def _check(self, x: StackInputs) -> None:
        if self.coef_ is None:
            raise FusionError("logistic fusion is not fitted; call fit() first")
        if x.names != self.names_:
            raise FusionError(f"logistic fusion was fitted on runs {self.names_}, not {x.names}")

    def margin(self, x: StackInputs) -> np.ndarray:
        """``(n, C)`` log-odds, computed a row block at a time."""
        self._check(x)
        out = np.empty((len(x), x.n_classes), np.float32)

        def block(rows: slice) -> None:  # each block owns its rows of out
            z = (self._features(x, rows) - self.mu_) / self.sd_
            out[rows] = np.einsum("ncf,cf->nc", z, self.coef_) + self.intercept_  # (b, C, F) -> (b, C)

        list(thread_map(block, self._rows(x), self._threads()))
        return out

    def predict(self, x: StackInputs) -> np.ndarray:
        return expit(self.margin(x)).astype(np.float32)

    def contributions(self, x: StackInputs) -> np.ndarray:
        self._check(x)
        out = np.zeros((len(x), x.n_models, x.n_classes), np.float32)
        owner = feature_owner(x.n_models, self.settings.availability)

        def block(rows: slice) -> None:
            z = (self._features(x, rows) - self.mu_) / self.sd_ * self.coef_  # (b, C, F)
            for j, m in enumerate(owner):
                out[rows, m, :] += z[:, :, j]  # each block owns its rows of out

        list(thread_map(block, self._rows(x), self._threads()))
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
    full = LogisticFusion(settings).fit(x, labels)
    for k in range(folds):
        held = fold == k
        model = LogisticFusion(settings)._fit(x.take(np.flatnonzero(~held)), labels[~held], full)
        margin[held] = model.margin(x.take(np.flatnonzero(held)))
    return margin, full
