"""``fuse_runs``: read runs, apply the leakage rule, fit and score methods, write the fused run.

::

    store --load_inputs--> StoredInputs: (N, M) availability; rows' scores read on demand
          --plan_fit-----> fit rows / eval rows   (or LeakageError)
          for each method: fit on the fit rows (at most fit_rows of them, a seeded sample)
                           -> predict in row blocks: the written method every row, the others the eval rows
                           -> metrics on the eval rows, reliance on at most reliance_rows of them
          --prediction_writer(out): blocks of fused scores, attrs={method, inputs, splits, metrics, record}

Memory: the (N, M) availability, the fit rows' and the eval rows' (n, M, C) inputs (read from
the store once each), the eval rows' scores and one block of inputs and derived features; no
(N, M, C) or (N, C, F) array is built for all rows.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusion.errors import FusionError
from fusion.inputs import StoredInputs, load_inputs, row_blocks
from fusion.leakage import FitPlan, plan_fit
from fusion.registry import fusion_class, get_fusion
from heads.metrics import class_map, evaluate
from store.feature_store import FeatureStore, PredictionWriter

log = logging.getLogger(__name__)

METRIC_NAMES = ("class_map", "sample_map", "gap20", "top1", "top5")
DEFAULT_FIT_ROWS = 200_000  # a stacker of ~10-20 weights per class needs no more; bounds fit time and memory
RELIANCE_ROWS = 20_000  # eval rows (seeded sample) whose contributions give the reliance table
PREDICT_ROWS = 16_384  # rows per prediction block (whole chunks of the prediction run)


@dataclass(frozen=True, eq=False)
class MethodOutcome:
    """One fusion method's result.

    Attributes:
        name: Method name.
        metrics: :func:`heads.metrics.evaluate` on the eval rows.
        per_class_ap: ``(C,)`` AP per class on the eval rows (NaN without positives).
        reliance: ``(C, M)`` share of each input in each class's output (rows sum to 1).
        record: ``Fuser.record()``: settings and what the method learned (weights, gains...).
        fit_seconds: Wall time of ``fit``.
        scores: ``(n_eval, C)`` fused probabilities of the eval rows (``FusionResult.plan.eval_rows``).
    """

    name: str
    metrics: dict[str, float]
    per_class_ap: np.ndarray
    reliance: np.ndarray
    record: dict[str, Any]
    fit_seconds: float
    scores: np.ndarray


@dataclass(frozen=True, eq=False)
class FusionResult:
    """Everything a report needs: inputs and methods scored on the same eval rows.

    Attributes:
        store: Store path.
        classes: Class names.
        inputs: Input run names (M).
        plan: The accepted fit/eval rows.
        input_metrics: Run name -> metrics on the eval rows.
        input_ap: Run name -> ``(C,)`` AP per class.
        availability: Run name -> fraction of eval rows where it is available.
        methods: Method name -> outcome; the first is the one written as a run.
        n_positives: ``(C,)`` positives per class among the eval rows.
        written_as: Name of the fused run written to the store (None if not written).
        fit_rows: The fit rows the stackers saw (``plan.fit_rows``, or a seeded sample of at most
            ``fit_rows`` of them).
    """

    store: str
    classes: list[str]
    inputs: tuple[str, ...]
    plan: FitPlan
    input_metrics: dict[str, dict[str, float]]
    input_ap: dict[str, np.ndarray]
    availability: dict[str, float]
    methods: dict[str, MethodOutcome]
    n_positives: np.ndarray
    written_as: str | None = None
    fit_rows: np.ndarray | None = None

    @property
    def main(self) -> MethodOutcome:
        """The method whose predictions are the fused run."""
        return next(iter(self.methods.values()))

    @property
    def best_input(self) -> str:
        """The input run with the highest class mAP on the eval rows."""
        return max(self.inputs, key=lambda r: self.input_metrics[r]["class_map"])

    def metrics_table(self) -> pd.DataFrame:
        """Rows: each input, then each method; columns: :data:`METRIC_NAMES` (+ kind, fit_s)."""
        rows = [{"name": r, "kind": "input", **{k: self.input_metrics[r][k] for k in METRIC_NAMES}, "fit_s": np.nan}
                for r in self.inputs]
        rows += [{"name": m.name, "kind": "fusion", **{k: m.metrics[k] for k in METRIC_NAMES},
                  "fit_s": m.fit_seconds} for m in self.methods.values()]
        return pd.DataFrame(rows).set_index("name")


def _evaluate(scores: np.ndarray, labels: np.ndarray, what: str) -> tuple[dict[str, float], np.ndarray]:
    try:
        return evaluate(scores, labels), class_map(scores, labels).per_class
    except ValueError as exc:
        raise FusionError(f"cannot score {what} on the eval rows: {exc}") from None


def fuse_runs(store: FeatureStore | str | Path, runs: Sequence[str], *, method: str = "xgboost",
              compare: Sequence[str] = (), fit_split: str = "train", eval_split: str = "test",
              settings: Mapping[str, Any] | None = None, client: Any = None, write_as: str | None = None,
              overwrite: bool = False, on_method: Callable[[str], None] | None = None,
              fit_rows: int | None = DEFAULT_FIT_ROWS, block_rows: int = PREDICT_ROWS,
              reliance_rows: int = RELIANCE_ROWS) -> FusionResult:
    """Fuse prediction runs of a store with ``method`` (and score ``compare`` methods beside it).

    Args:
        store: The store, or its path (opened read-only unless ``write_as`` is given).
        runs: Input prediction run names (M >= 1).
        method: Registered method whose fused predictions are written (``write_as``).
        compare: Other methods fitted and scored on the same rows, for the report.
        fit_split: Split the stackers fit on (out-of-fold train rows, or a held-out split).
        eval_split: Split everything is scored on.
        settings: Method name -> its settings (object or dict); missing = defaults.
        client: A ``dask.distributed.Client`` for ``xgboost`` (None: train locally).
        write_as: Write the fused predictions as this prediction run (None: do not write).
        overwrite: Replace an existing run of that name.
        on_method: Called with each method's name before it is fitted (progress display).
        fit_rows: Fit on a seeded random sample of at most this many fit rows (None or 0: all);
            recorded in the fused run's attrs.
        block_rows: Rows per prediction block (memory O(block_rows x M x C)).
        reliance_rows: Reliance is measured on a seeded sample of at most this many eval rows.

    Returns:
        The :class:`FusionResult`.

    Raises:
        StoreError: missing store/run; FusionError (LeakageError, InputMismatch, UnknownMethod)
        for inputs that would leak or do not fit; nothing is written then.
    """
    names = list(dict.fromkeys([method, *compare]))
    classes = [fusion_class(n) for n in names]  # unknown names fail before any work
    fs = store if isinstance(store, FeatureStore) else FeatureStore.open(store, mode="a" if write_as else "r")
    if write_as is not None:
        if write_as in runs:
            raise FusionError(f"--out {write_as!r} is one of the input runs; choose another name for the fused run")
        if write_as in fs.prediction_runs() and not overwrite:
            raise FusionError(f"prediction run {write_as!r} already exists in {fs.path}; pass --overwrite or "
                              "choose another --out name")
    x, records, attrs = load_inputs(fs, runs)
    split = fs.videos(["split"])["split"].to_numpy()
    needs_fit = any(c.needs_fit for c in classes)
    plan = plan_fit(records, split, len(fs.classes), fit_split=fit_split if needs_fit else None,
                    eval_split=eval_split)
    y_eval = fs.labels(plan.eval_rows)
    x_eval = x.take(plan.eval_rows)
    input_metrics, input_ap = {}, {}
    for i, run in enumerate(x.names):
        input_metrics[run], input_ap[run] = _evaluate(x_eval.single(i), y_eval, f"run {run!r}")
    settings = dict(settings or {})
    fit_idx = sample_rows(plan.fit_rows, fit_rows)
    x_fit, y_fit = (x.take(fit_idx), fs.labels(fit_idx)) if needs_fit else (None, None)  # read once for all methods
    rel_idx = sample_rows(np.arange(len(plan.eval_rows)), reliance_rows)
    outcomes: dict[str, MethodOutcome] = {}
    writing = fs.prediction_writer(write_as) if write_as is not None else contextlib.nullcontext()
    with writing as writer:  # the fused run appears only if everything below succeeds
        for i, (name, cls) in enumerate(zip(names, classes)):
            if on_method is not None:
                on_method(name)
            kwargs = {"client": client} if client is not None and cls.accepts_client else {}
            fuser = get_fusion(name, settings.get(name), **kwargs)
            t0 = time.perf_counter()
            if cls.needs_fit:
                fuser.fit(x_fit, y_fit)
            fit_s = time.perf_counter() - t0
            if i == 0 and writer is not None:
                scores = _predict_all_rows(fuser, x, plan.eval_rows, writer, block_rows)
            else:
                scores = np.concatenate([fuser.predict(x_eval.take(b)) for b in row_blocks(len(x_eval), 1, block_rows)])
            metrics, ap = _evaluate(scores, y_eval, f"method {name!r}")
            outcomes[name] = MethodOutcome(name, metrics, ap, fuser.reliance(x_eval.take(rel_idx)), fuser.record(),
                                           fit_s, scores)
            log.info("%s: class mAP %.4f on %s (fit %.1f s)", name, metrics["class_map"], eval_split, fit_s)
        result = FusionResult(
            store=str(fs.path), classes=list(fs.classes), inputs=x.names, plan=plan, input_metrics=input_metrics,
            input_ap=input_ap, availability={r: float(x_eval.available[:, i].mean()) for i, r in enumerate(x.names)},
            methods=outcomes, n_positives=y_eval.sum(axis=0), written_as=write_as, fit_rows=fit_idx)
        if writer is not None:
            main = result.main
            train_splits = sorted({s for r in records for s in r.train_splits}
                                  | ({plan.fit_split} if needs_fit else set()))
            writer.attrs.update({
                "head": f"fusion:{main.name}", "method": main.name, "inputs": list(x.names), "score_type": "sigmoid",
                "fit_split": plan.fit_split if classes[0].needs_fit else None, "eval_split": eval_split,
                "fit_rows": {"used": len(fit_idx) if classes[0].needs_fit else 0, "of": len(plan.fit_rows),
                             "limit": fit_rows or None},
                "reliance_rows": len(rel_idx),
                "train_splits": train_splits, "folds": 0, "metrics": {eval_split: main.metrics},
                "fit_seconds": main.fit_seconds, "fusion": main.record,
                "reliance": {r: np.round(main.reliance[:, i], 4).tolist() for i, r in enumerate(x.names)},
                "inputs_metrics": {eval_split: input_metrics},
                "input_attrs": {r: a.get("head") for r, a in zip(runs, attrs)},
            })
    if write_as is not None:
        log.info("wrote fused run %r to %s", write_as, fs.path)
    return result


def sample_rows(rows: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """``rows``, or a seeded random sample of ``limit`` of them (kept in order) when there are more."""
    if not limit or len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, limit, replace=False))


def _predict_all_rows(fuser: Any, x: StoredInputs, eval_rows: np.ndarray, writer: PredictionWriter,
                      block_rows: int) -> np.ndarray:
    """Predict every row a block at a time (read from the store, fused, written) into ``writer``.

    Returns:
        The ``(n_eval, C)`` scores of ``eval_rows`` (sorted).
    """
    out = np.empty((len(eval_rows), x.n_classes), np.float32)
    for rows in row_blocks(len(x), 1, block_rows):
        block = fuser.predict(x.take(rows))  # (b, C)
        writer.write(rows.start, block)
        lo, hi = np.searchsorted(eval_rows, [rows.start, rows.stop])
        out[lo:hi] = block[eval_rows[lo:hi] - rows.start]
    return out
