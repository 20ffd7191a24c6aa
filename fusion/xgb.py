"""``xgboost``: per-class gradient-boosted trees stacked on the logistic stacker.

::

    class c:  margin_c = logistic_c(own log-odds, availability)          (cross-fitted on the fit rows)
                       + trees_c(own log-odds of the M runs  [NaN where a run is unavailable],
                                 M availability columns,
                                 the k other (run, class) log-odds most correlated with label c)

Why this shape. If the runs' errors were independent given the label, a linear stacker on
log-odds would already be optimal, and trees approximate a linear function only by many
small steps; so the trees start from the logistic stacker's margin (``base_margin``) and
only learn what it cannot: interactions (a class needs the action seen by RGB *and* the
direction seen by flow), behaviour that changes with a run's availability (no audio track),
saturation, and evidence from other classes. The base margin of a fit row comes from a
logistic stacker that did not see it (``base_folds``-fold cross-fitting), so the trees never
fit on an in-sample margin.

Speed. One small booster per class (depth 3, up to 200 rounds, early stopping on a held-out
``valid_fraction`` of the fit rows, ``hist`` with 64 bins, ~15 columns). On 9k rows x 40
classes x 3 runs, one multi-target booster on all ``M * C`` columns
(``multi_strategy="one_output_per_tree"``) took 33 s against 4-8 s for the per-class
boosters, at the same mAP. The classes are spread over threads with one XGBoost thread each:
as fast as one class at a time with all threads on an idle machine, and 8x faster on a busy
one, where XGBoost's OpenMP threads stall each other (numbers in fusion/README.md).

Devices: ``device="auto"`` trains on CUDA when XGBoost can see a GPU (then the classes run one
after another, each with all threads). With a Dask ``client`` every class is trained by
``xgboost.dask.train`` over the cluster's workers (rows partitioned across them); prediction
is local. Reliance (:meth:`contributions`) adds the linear base's exact contributions to the
trees' SHAP values (TreeSHAP), both grouped by input run; ``record()`` also keeps XGBoost's
total-gain importance of the trees, summed per run.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from fusion._settings import SettingsMixin
from fusion.errors import FusionError
from fusion.inputs import EPS, StackInputs, row_blocks
from fusion.logistic import LogisticFusion, LogisticSettings, out_of_fold_margin
from fusion.registry import Fuser, register_fusion
from store.cli import setting_name
from store.device import resolve_device
from store.threads import SAMPLE_S, current_threads, free_cores, thread_map

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
PREDICT_BLOCK_ELEMENTS = 1 << 23  # input scores (b * M * C) per prediction block: bounds the (b, F) class matrices


#: fusion.run's flags of XGBSettings fields (the others are keys of the [xgboost] table of --config).
_FLAGS = {"max_depth": "--max-depth", "n_rounds": "--rounds", "learning_rate": "--learning-rate",
          "other_scores": "--other-scores", "n_jobs": "--threads", "seed": "--seed",
          "device": "--device"}


@dataclass(frozen=True)
class XGBSettings(SettingsMixin):
    """Settings of the xgboost stacker.

    Attributes:
        max_depth: Tree depth.
        learning_rate: Shrinkage (``eta``).
        n_rounds: Most boosting rounds per class.
        early_stopping_rounds: Stop a class after this many rounds without a better held-out log-loss.
        valid_fraction: Share of the fit rows held out for early stopping.
        max_bin: Histogram bins per feature (``hist``).
        min_child_weight: Minimum hessian sum in a leaf.
        reg_lambda: L2 on leaf weights.
        subsample: Row subsampling per tree.
        other_scores: Other (run, class) scores given to each class's trees, chosen by absolute
            correlation with the class's label on the fit rows; -1 = all ``M * C``, 0 = none.
        availability: Add one 0/1 availability column per run.
        linear_base: Start from the cross-fitted logistic stacker's margin (else from the prior).
        base_folds: Folds of that cross-fitting.
        logistic_c: Inverse L2 strength of the base logistic stacker.
        device: ``auto`` (CUDA when XGBoost sees a GPU), ``cpu`` or ``cuda``.
        n_jobs: Threads, of the trees and of the base logistic stacker; 0 = the command's
            (:func:`store.threads.current_threads`: ``fusion.run --threads``, by default the free cores),
            else the free cores (:func:`store.threads.free_cores` over ``SAMPLE_S``), resolved once at fit.
        class_threads: Train the classes in ``n_jobs`` threads with one XGBoost thread each
            (faster for small per-class models); False: one class at a time with ``n_jobs``
            XGBoost threads. Ignored on CUDA (one class at a time).
        seed: Seed of the held-out split, the cross-fitting folds and subsampling.
    """

    max_depth: int = 3
    learning_rate: float = 0.1
    n_rounds: int = 200
    early_stopping_rounds: int = 20
    valid_fraction: float = 0.15
    max_bin: int = 64
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    subsample: float = 1.0
    other_scores: int = 8
    availability: bool = True
    linear_base: bool = True
    base_folds: int = 5
    logistic_c: float = 1.0
    device: str = "auto"
    n_jobs: int = 0
    class_threads: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [("max_depth", self.max_depth >= 1, ">= 1"), ("n_rounds", self.n_rounds >= 1, ">= 1"),
                  ("early_stopping_rounds", self.early_stopping_rounds >= 1, ">= 1"),
                  ("max_bin", self.max_bin >= 2, ">= 2"), ("valid_fraction", 0 < self.valid_fraction < 1, "in (0, 1)"),
                  ("subsample", 0 < self.subsample <= 1, "in (0, 1]"), ("learning_rate", self.learning_rate > 0, "> 0"),
                  ("other_scores", self.other_scores >= -1, ">= -1 (-1: all)"),
                  ("base_folds", self.base_folds >= 2, ">= 2"),
                  ("n_jobs", self.n_jobs >= 0, ">= 0 (0: the free cores)"),
                  ("logistic_c", self.logistic_c > 0, "> 0"), ("device", self.device in DEVICES, f"one of {DEVICES}")]
        problems = [f"{setting_name(name, _FLAGS.get(name, ''))} must be {rule}, got {getattr(self, name)!r}"
                    for name, ok, rule in checks if not ok]
        if problems:
            raise FusionError(f"invalid xgboost settings ([xgboost] in --config): {'; '.join(problems)}")

    def params(self, device: str, nthread: int) -> dict[str, Any]:
        """The ``xgboost.train`` parameters of one class's booster."""
        return {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist", "device": device,
                "max_depth": self.max_depth, "eta": self.learning_rate, "max_bin": self.max_bin,
                "min_child_weight": self.min_child_weight, "lambda": self.reg_lambda, "subsample": self.subsample,
                "nthread": nthread, "seed": self.seed, "verbosity": 1}


@functools.lru_cache(maxsize=1)
def cuda_visible() -> bool:
    """Whether XGBoost can train on a GPU here (torch's view if torch is loaded, else a 1-round probe)."""
    if not xgb.build_info().get("USE_CUDA"):
        return False
    if "torch" in sys.modules:
        return bool(sys.modules["torch"].cuda.is_available())
    probe = xgb.DMatrix(np.arange(8, dtype=np.float32).reshape(4, 2), label=np.array([0, 1, 0, 1]))
    with xgb.config_context(verbosity=0):
        booster = xgb.train({"device": "cuda", "tree_method": "hist", "objective": "binary:logistic"}, probe, 1)
    return json.loads(booster.save_config())["learner"]["generic_param"]["device"].startswith("cuda")


def screen_other_scores(logits: np.ndarray, labels: np.ndarray, k: int, max_rows: int = 100_000,
                        seed: int = 0) -> np.ndarray:
    """For each class, the ``k`` (run, class') columns most correlated with its label (own class excluded).

    Args:
        logits: ``(n, M, C)`` filled log-odds of the fit rows.
        labels: ``(n, C)`` labels.
        k: Columns per class; -1 = all ``M * (C - 1)`` others.
        max_rows: Correlations are estimated on at most this many rows.

    Returns:
        ``(C, k)`` int indices into the flattened ``(M * C)`` columns (``m * C + c'``).
    """
    n, m, c = logits.shape
    own = np.arange(m)[None, :] * c + np.arange(c)[:, None]  # (C, M): each class's own columns
    k = m * (c - 1) if k < 0 else min(k, m * (c - 1))
    if k == 0:
        return np.zeros((c, 0), dtype=np.int64)
    if n > max_rows:  # sample first: the float64 copy below is then at most max_rows rows
        pick = np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        logits, labels = logits[pick], labels[pick]
        n = max_rows
    flat = logits.reshape(n, m * c).astype(np.float64)  # (n, M, C) -> (n, M * C)
    xs = (flat - flat.mean(0)) / np.where(flat.std(0) > 0, flat.std(0), 1.0)
    y = labels.astype(np.float64)
    ys = (y - y.mean(0)) / np.where(y.std(0) > 0, y.std(0), 1.0)
    corr = np.abs(xs.T @ ys) / len(xs)  # (M * C, n) @ (n, C) -> (M * C, C)
    np.put_along_axis(corr, own.T, -1.0, axis=0)  # never pick a class's own columns
    return np.argsort(-corr, axis=0, kind="stable")[:k].T.astype(np.int64)  # (k, C) -> (C, k)


@register_fusion("xgboost")
class XGBoostFusion(Fuser):
    """Per-class boosted trees on the logistic stacker's cross-fitted margin (module docstring)."""

    Settings = XGBSettings
    accepts_client = True

    def __init__(self, settings: XGBSettings | None = None, client: Any = None) -> None:
        super().__init__(settings)
        self.client = client
        self.boosters_: list[xgb.Booster | None] = []
        self.other_: np.ndarray | None = None  # (C, k)
        self.base_: LogisticFusion | None = None
        self.prior_: np.ndarray | None = None  # (C,) log-odds when there is no linear base
        self.rounds_: np.ndarray | None = None
        self.gain_: np.ndarray | None = None  # (C, M)
        self.names_: tuple[str, ...] = ()
        self.device_ = "cpu"
        self.n_jobs_ = 1

    # ------------------------------------------------------------------ features
    def _class_matrix(self, logits: np.ndarray, avail: np.ndarray, c: int) -> np.ndarray:
        """``(n, F)`` features of class ``c`` from masked log-odds ``(n, M, C)`` and ``(n, M)`` availability."""
        n, m, n_classes = logits.shape
        parts = [logits[:, :, c]]
        if self.settings.availability:
            parts.append(avail.astype(np.float32))
        parts.append(logits.reshape(n, m * n_classes)[:, self.other_[c]])
        return np.concatenate(parts, axis=1)

    def _base_margin(self, x: StackInputs) -> np.ndarray:
        if self.base_ is not None:
            return self.base_.margin(x)
        return np.broadcast_to(self.prior_, (len(x), x.n_classes)).astype(np.float32)

    # ------------------------------------------------------------------ fit
    def fit(self, x: StackInputs, labels: np.ndarray) -> XGBoostFusion:
        s = self.settings
        labels = np.asarray(labels).astype(np.float32)
        n, m, n_classes = x.probs.shape
        n_valid = round(s.valid_fraction * n)
        if n_valid < 1 or n - n_valid < 2:
            raise FusionError(f"{n} fit rows are too few to hold out {s.valid_fraction:.0%} for early stopping")
        self.names_ = x.names
        self.n_jobs_ = s.n_jobs or current_threads() or free_cores(sample_s=SAMPLE_S)  # once: fit and every block
        self.device_ = resolve_device(s.device, gpu_visible=cuda_visible, library="XGBoost")
        self.other_ = screen_other_scores(x.filled_logits(), labels, s.other_scores, seed=s.seed)
        if s.linear_base:
            base_settings = LogisticSettings(c=s.logistic_c, availability=s.availability, n_jobs=self.n_jobs_)
            margin, self.base_ = out_of_fold_margin(base_settings, x, labels, folds=s.base_folds, seed=s.seed)
        else:
            prior = np.clip(labels.mean(axis=0), EPS, 1 - EPS)
            self.prior_ = np.log(prior / (1 - prior)).astype(np.float32)
            margin = self._base_margin(x)
        order = np.random.default_rng(s.seed).permutation(n)
        parts = (np.sort(order[n_valid:]), np.sort(order[:n_valid]))  # (train, held-out) rows
        logits, avail = x.masked_logits(), x.available
        if self.client is not None:
            from fusion._xgb_dask import train_classes_on_dask
            results = train_classes_on_dask(self, logits, avail, labels, margin, parts)
        else:
            results = self._train_classes_locally(logits, avail, labels, margin, parts)
        self.boosters_ = [r[0] for r in results]
        self.rounds_ = np.array([r[1] for r in results])
        self.gain_ = np.stack([self._gain_per_model(b, m, n_classes, c) for c, b in enumerate(self.boosters_)])
        log.info("xgboost fusion: %d classes, %.1f rounds on average, device %s", n_classes, self.rounds_.mean(),
                 self.device_)
        return self

    def _train_classes_locally(self, logits: np.ndarray, avail: np.ndarray, labels: np.ndarray, margin: np.ndarray,
                               parts: tuple[np.ndarray, np.ndarray]) -> list[tuple[xgb.Booster | None, int]]:
        s, n_jobs = self.settings, self.n_jobs_
        serial = self.device_ == "cuda" or not s.class_threads
        workers, nthread = (1, n_jobs) if serial else (n_jobs, 1)
        params = s.params(self.device_, nthread)
        tr, va = parts

        def one(c: int) -> tuple[xgb.Booster | None, int]:
            if not labels[tr, c].any():
                return None, 0  # nothing to learn beyond the base margin
            feats = self._class_matrix(logits, avail, c)
            dtrain = xgb.QuantileDMatrix(feats[tr], labels[tr, c], base_margin=margin[tr, c], max_bin=s.max_bin,
                                         nthread=nthread)
            dvalid = xgb.QuantileDMatrix(feats[va], labels[va, c], base_margin=margin[va, c], ref=dtrain,
                                         max_bin=s.max_bin, nthread=nthread)
            booster = xgb.train(params, dtrain, s.n_rounds, evals=[(dvalid, "valid")],
                                early_stopping_rounds=s.early_stopping_rounds, verbose_eval=False)
            best = booster.best_iteration + 1
            return booster[:best], best

        return list(thread_map(one, range(labels.shape[1]), workers))

    def _gain_per_model(self, booster: xgb.Booster | None, m: int, n_classes: int, c: int) -> np.ndarray:
        gain = np.zeros(m)
        if booster is None:
            return gain
        owner = self._column_owner(m, n_classes, c)
        for name, value in booster.get_score(importance_type="total_gain").items():
            gain[owner[int(name[1:])]] += value
        return gain

    def _column_owner(self, m: int, n_classes: int, c: int) -> np.ndarray:
        own = np.arange(m)
        parts = [own, own] if self.settings.availability else [own]
        parts.append(self.other_[c] // n_classes)  # flat column m * C + c' belongs to run m
        return np.concatenate(parts)

    # ------------------------------------------------------------------ predict
    def _check(self, x: StackInputs) -> None:
        if self.rounds_ is None:
            raise FusionError("xgboost fusion is not fitted; call fit() first")
        if x.names != self.names_:
            raise FusionError(f"xgboost fusion was fitted on runs {self.names_}, not {x.names}")

    def _blocks(self, x: StackInputs) -> Iterator[tuple[slice, StackInputs, np.ndarray, np.ndarray]]:
        """``(rows, inputs, masked log-odds (b, M, C), base margin (b, C))`` of consecutive row blocks."""
        for rows in row_blocks(len(x), x.n_models * x.n_classes, PREDICT_BLOCK_ELEMENTS):
            xb = x.take(rows)
            yield rows, xb, xb.masked_logits(), self._base_margin(xb)

    def _per_class(self, fn: Callable[[int], None]) -> None:
        """Run ``fn(c)`` for every class with a booster, spread over ``n_jobs`` threads (one XGBoost thread each)."""
        classes = [c for c, b in enumerate(self.boosters_) if b is not None]
        workers = 1 if self.device_ == "cuda" else min(self.n_jobs_, max(1, len(classes)))
        list(thread_map(fn, classes, workers))

    def margin(self, x: StackInputs) -> np.ndarray:
        """``(n, C)`` fused log-odds, computed a row block at a time."""
        self._check(x)
        out = np.empty((len(x), x.n_classes), np.float32)
        for rows, xb, logits, base in self._blocks(x):
            out[rows] = base

            def one(c: int, rows: slice = rows, xb: StackInputs = xb, logits: np.ndarray = logits,
                    base: np.ndarray = base) -> None:
                feats, booster = self._class_matrix(logits, xb.available, c), self.boosters_[c]
                if self.device_ == "cpu":  # no DMatrix to build: about half the time of predict() at 1 thread
                    out[rows, c] = booster.inplace_predict(feats, predict_type="margin", base_margin=base[:, c])
                else:  # a CUDA booster would copy NumPy rows to a DMatrix anyway, with a warning per call
                    dm = xgb.DMatrix(feats, base_margin=base[:, c], nthread=1)
                    out[rows, c] = booster.predict(dm, output_margin=True)

            self._per_class(one)
        return out

    def predict(self, x: StackInputs) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-self.margin(x)))).astype(np.float32)

    def contributions(self, x: StackInputs) -> np.ndarray:
        self._check(x)
        out = self.base_.contributions(x) if self.base_ is not None else \
            np.zeros((len(x), x.n_models, x.n_classes), np.float32)
        for rows, xb, logits, base in self._blocks(x):

            def one(c: int, rows: slice = rows, xb: StackInputs = xb, logits: np.ndarray = logits,
                    base: np.ndarray = base) -> None:
                dm = xgb.DMatrix(self._class_matrix(logits, xb.available, c), base_margin=base[:, c], nthread=1)
                shap = self.boosters_[c].predict(dm, pred_contribs=True)[:, :-1]  # (b, F + 1) -> (b, F), no bias
                for j, mdl in enumerate(self._column_owner(x.n_models, x.n_classes, c)):
                    out[rows, mdl, c] += shap[:, j]  # each class owns its own column of out

            self._per_class(one)
        return out

    def record(self) -> dict[str, Any]:
        rec = super().record()
        if self.rounds_ is not None:
            rec.update(device=self.device_, rounds=self.rounds_.tolist(),
                       other_scores=self.other_.tolist(),
                       gain_per_input={n: np.round(self.gain_[:, i], 4).tolist() for i, n in enumerate(self.names_)})
        return rec
