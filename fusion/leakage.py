"""The leakage rule: which rows a stacker may be fitted on and evaluated on.

A stacker learns how much to trust each input model. If it is fitted on predictions that a
model made for rows it was trained on (in-sample predictions), it learns to trust that model
far too much: in-sample scores are better than the scores the model will give new videos.
If it is evaluated on rows it was fitted on, its metrics say nothing about new videos. So:

1. Every input run must cover every video of the store with every class (``(N, C)`` scores).
2. The fit split and the eval split must differ (and neither may be empty).
3. No prediction the stacker fits on or is evaluated on may be in-sample. The prediction of
   run ``r`` for row ``i`` is *in-sample* when the row's split is one the run's model was
   trained on (``attrs["train_splits"]``, default ``["train"]``) and its fold is -1, i.e. it
   does not come from a fold model that held the row out. Rows where the run has no usable
   prediction (its features are missing there, its scores are NaN; see ``fusion.inputs``)
   are not used and therefore cannot leak.

In practice this allows two set-ups:

- *out-of-fold stacking* (``fit_split="train"``): every input run was trained with k folds
  (``heads.train --folds k``), so each train row's score comes from the fold model that held
  it out; the stacker fits on those and is evaluated on val or test;
- *held-out stacking* (``fit_split="val"``): the inputs were trained on train only; the
  stacker fits on their val predictions and is evaluated on test only.

Fused predictions are written with ``fold = -1`` everywhere and ``train_splits`` = the fit
split plus every input's train splits, so a later stacker on top of them obeys the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fusion.errors import InputMismatch, LeakageError

DEFAULT_TRAIN_SPLITS: tuple[str, ...] = ("train",)


@dataclass(frozen=True, eq=False)
class RunRecord:
    """What the leakage rule needs to know about one input prediction run.

    Attributes:
        name: Run name.
        shape: Shape of its scores, ``(rows, classes)``.
        fold: ``(rows,)`` fold that held each row out; -1 when none did.
        train_splits: Splits the run's model(s) were trained on.
        available: ``(rows,)`` bool, rows where the run has a usable prediction; None = all.
    """

    name: str
    shape: tuple[int, int]
    fold: np.ndarray
    train_splits: tuple[str, ...] = DEFAULT_TRAIN_SPLITS
    available: np.ndarray | None = None

    def in_sample(self, split: np.ndarray) -> np.ndarray:
        """``(rows,)`` bool: rows whose prediction the run's model made in-sample (and that are used)."""
        mask = np.isin(split, list(self.train_splits)) & (np.asarray(self.fold) < 0)
        if self.available is not None:
            mask &= np.asarray(self.available, dtype=bool)
        return mask


@dataclass(frozen=True, eq=False)
class FitPlan:
    """Rows a stacker is fitted on and evaluated on, once the rule has accepted them.

    Attributes:
        fit_rows: Row indices the stacker fits on (empty when nothing is fitted).
        eval_rows: Row indices every method and input is evaluated on.
        fit_split: Name of the fit split (None when nothing is fitted).
        eval_split: Name of the eval split.
    """

    fit_rows: np.ndarray
    eval_rows: np.ndarray
    fit_split: str | None
    eval_split: str


def check_runs(runs: Sequence[RunRecord], n_rows: int, n_classes: int) -> None:
    """Rule 1: at least one run, each named once, each with ``(N, C)`` scores and ``(N,)`` folds.

    Raises:
        InputMismatch: naming what is wrong with which run.
    """
    if not runs:
        raise InputMismatch("no input runs: name at least one prediction run with --runs")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InputMismatch(f"a run is named twice in --runs ({', '.join(names)}); name each run once")
    for r in runs:
        if tuple(r.shape) != (n_rows, n_classes):
            raise InputMismatch(f"run {r.name!r} has {r.shape[0]} rows x {r.shape[1]} classes but the store has "
                                f"{n_rows} videos x {n_classes} classes; predict all rows again for this run")
        if np.shape(r.fold) != (n_rows,):
            raise InputMismatch(f"run {r.name!r} has {np.shape(r.fold)} fold ids for {n_rows} videos; "
                                "write the run again")


def plan_fit(runs: Sequence[RunRecord], split: np.ndarray, n_classes: int, *, fit_split: str | None,
             eval_split: str) -> FitPlan:
    """Apply the leakage rule (module docstring) and return the fit and eval rows.

    Args:
        runs: The input runs.
        split: ``(N,)`` split name of every video in the store.
        n_classes: The store's class count C.
        fit_split: Split the stacker fits on; None for a method that fits nothing (``mean``).
        eval_split: Split everything is evaluated on.

    Returns:
        The accepted :class:`FitPlan`.

    Raises:
        InputMismatch: no runs, repeated runs, or a run whose shape is not ``(N, C)``.
        LeakageError: equal or empty splits, or an in-sample prediction among the used rows.
    """
    split = np.asarray(split).astype(object)
    check_runs(runs, len(split), n_classes)
    if fit_split is not None and fit_split == eval_split:
        raise LeakageError(f"--fit-split and --eval-split are both {eval_split!r}: the stacker would be scored on "
                           "rows it was fitted on; evaluate on another split (e.g. --fit-split val --eval-split test)")
    eval_rows = np.flatnonzero(split == eval_split)
    if not len(eval_rows):
        raise LeakageError(f"the eval split {eval_split!r} has no rows; the store's splits are "
                           f"{', '.join(sorted(set(split))) or 'none'} (choose one with --eval-split)")
    fit_rows = np.flatnonzero(split == fit_split) if fit_split is not None else np.array([], dtype=np.int64)
    if fit_split is not None and not len(fit_rows):
        raise LeakageError(f"the fit split {fit_split!r} has no rows; the store's splits are "
                           f"{', '.join(sorted(set(split))) or 'none'} (choose one with --fit-split)")
    for role, rows, name in (("fit", fit_rows, fit_split), ("eval", eval_rows, eval_split)):
        for r in runs:
            bad = int(r.in_sample(split)[rows].sum())
            if bad:
                hint = ("re-train that head with out-of-fold predictions (heads.train --folds k), or fit on a split "
                        "the inputs were not trained on (--fit-split val --eval-split test)") if role == "fit" else \
                       "evaluate on a split the inputs were not trained on (--eval-split test)"
                raise LeakageError(f"run {r.name!r} predicted {bad} of the {len(rows)} {name!r} rows in-sample "
                                   f"(trained on {'/'.join(r.train_splits)}, fold -1), so the stacker cannot be "
                                   f"{'fitted' if role == 'fit' else 'evaluated'} on them; {hint}")
    return FitPlan(fit_rows=fit_rows, eval_rows=eval_rows, fit_split=fit_split, eval_split=eval_split)
