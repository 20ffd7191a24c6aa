"""Input prediction runs as one stack: probabilities, availability, and what the leakage rule needs.

A run's scores become probabilities (``attrs["score_type"]``: ``sigmoid`` / ``softmax`` /
``probability`` are kept, ``logit`` goes through a sigmoid; a run without it is inferred from
its range, with a warning). A run is *unavailable* on a row when its prediction there means
nothing:

- the score row holds a NaN;
- the run names its feature sets (``attrs["features"]``, as ``heads.train`` writes) and none of
  them has a written row with a valid clip there (``heads.train`` writes 0 for such rows);
- the run is an audio run (``attrs["modality"]``, or the modality of all its feature sets, is
  ``audio``) and the video has no audio track (``has_audio`` is False).

How methods treat unavailable entries: ``xgboost`` sees them as missing values (NaN) plus one
0/1 availability column per run; ``mean``, ``weighted`` and ``logistic`` use what is there (an
unavailable entry is replaced by the mean of the available runs' probabilities on that row and
class; a row with no available run keeps its raw scores). A single input is evaluated on its
raw scores (NaN counted as 0), i.e. as it would be used alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fusion.errors import InputMismatch
from fusion.leakage import DEFAULT_TRAIN_SPLITS, RunRecord, check_runs
from store.errors import FeatureSetNotFound
from store.feature_store import FeatureStore

log = logging.getLogger(__name__)

PROBABILITY_TYPES = ("sigmoid", "softmax", "probability")
BLOCK_ELEMENTS = 1 << 22  # values per row block of derived features (~16 MB of float32): bounds temporaries
LOGIT_TYPES = ("logit",)
EPS = 1e-6


@dataclass(frozen=True, eq=False)
class StackInputs:
    """Per-run class probabilities of some rows, ready for a stacker.

    Attributes:
        probs: ``(n, M, C)`` float32 probabilities as the runs wrote them (NaN where a run wrote NaN).
        available: ``(n, M)`` bool, where each run's prediction is usable.
        names: The M run names.
    """

    probs: np.ndarray
    available: np.ndarray
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if (self.probs.ndim != 3 or self.available.shape != self.probs.shape[:2]
                or len(self.names) != self.probs.shape[1]):
            raise InputMismatch(f"probs {self.probs.shape}, available {self.available.shape} and {len(self.names)} "
                                "names do not describe the same (rows, runs, classes)")

    @property
    def n_models(self) -> int:
        return self.probs.shape[1]

    @property
    def n_classes(self) -> int:
        return self.probs.shape[2]

    def __len__(self) -> int:
        return self.probs.shape[0]

    def take(self, rows: np.ndarray | slice) -> StackInputs:
        """The same runs on a subset of rows (a slice gives a view, no copy)."""
        return StackInputs(self.probs[rows], self.available[rows], self.names)

    def single(self, m: int) -> np.ndarray:
        """``(n, C)`` run ``m`` alone, as it would be used alone (NaN -> 0)."""
        return np.nan_to_num(self.probs[:, m, :], nan=0.0)

    def masked(self) -> np.ndarray:
        """``(n, M, C)`` probabilities with NaN wherever the run is unavailable (for trees)."""
        return np.where(self.available[:, :, None], self.probs, np.nan).astype(np.float32)

    def filled(self) -> np.ndarray:
        """``(n, M, C)`` probabilities with each unavailable entry replaced by the mean of the
        available runs on that row (rows with no available run keep their raw scores, NaN -> 0.5)."""
        avail = self.available[:, :, None]  # (n, M) -> (n, M, 1)
        raw = np.nan_to_num(self.probs, nan=0.5)
        count = avail.sum(axis=1, keepdims=True)  # (n, 1, 1)
        mean = np.where(avail, raw, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)  # (n, M, C) -> (n, 1, C)
        return np.where(avail | (count == 0), raw, mean).astype(np.float32)

    def filled_logits(self) -> np.ndarray:
        """``(n, M, C)`` log-odds of :meth:`filled` (probabilities clipped to [1e-6, 1 - 1e-6])."""
        return to_logit(self.filled())

    def masked_logits(self) -> np.ndarray:
        """``(n, M, C)`` log-odds with NaN where unavailable."""
        return to_logit(self.masked())


def row_blocks(n_rows: int, row_elements: int, block_elements: int | None = None) -> Iterator[slice]:
    """Consecutive row slices of ``n_rows`` rows with about ``block_elements`` (default
    :data:`BLOCK_ELEMENTS`) values each, for rows of ``row_elements`` values (at least one row each)."""
    rows = max(1, (block_elements or BLOCK_ELEMENTS) // max(1, row_elements))
    for a in range(0, n_rows, rows):
        yield slice(a, min(n_rows, a + rows))


def to_logit(p: np.ndarray) -> np.ndarray:
    """Log-odds of probabilities clipped to ``[EPS, 1 - EPS]`` (NaN stays NaN)."""
    q = np.clip(p, EPS, 1 - EPS)
    return np.log(q / (1 - q)).astype(np.float32)


def score_type_of(score_type: str | None, lo: float | None, hi: float | None, run: str) -> str:
    """The score type a run's scores are read as, given their finite range ``[lo, hi]`` (None: no
    finite score): the recorded one, checked, or one inferred from the range (with a warning)."""
    inside = lo is None or (lo >= 0 and hi <= 1)
    if score_type is None:
        score_type = "probability" if inside else "logit"
        log.warning("run %r records no score_type; its scores are %s [0, 1], so they are read as %s",
                    run, "inside" if inside else "outside", score_type)
    if score_type in PROBABILITY_TYPES:
        if not inside:
            raise InputMismatch(f"run {run!r} says score_type={score_type!r} but has scores outside [0, 1]; "
                                "fix its attrs (score_type 'logit' for raw outputs)")
        return score_type
    if score_type in LOGIT_TYPES:
        return score_type
    raise InputMismatch(f"run {run!r} has score_type={score_type!r}; known: "
                        f"{', '.join(PROBABILITY_TYPES + LOGIT_TYPES)}")


def _finite_range(scores: np.ndarray) -> tuple[float | None, float | None]:
    finite = scores[np.isfinite(scores)]
    return (float(finite.min()), float(finite.max())) if finite.size else (None, None)


def _as_probability(scores: np.ndarray, score_type: str) -> np.ndarray:
    """Scores of a checked :func:`score_type_of` as float32 probabilities."""
    if score_type in LOGIT_TYPES:
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-scores.astype(np.float64)))).astype(np.float32)
    return scores.astype(np.float32)


def to_probability(scores: np.ndarray, score_type: str | None, run: str) -> np.ndarray:
    """Scores of a run as probabilities, following its ``score_type``."""
    return _as_probability(scores, score_type_of(score_type, *_finite_range(scores), run))


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def run_availability(fs: FeatureStore, run: str, scored: np.ndarray, attrs: dict[str, Any],
                     has_audio: np.ndarray | None) -> np.ndarray:
    """``(N,)`` bool: rows where ``run`` has a usable prediction (rules in the module docstring).

    Args:
        scored: ``(N,)`` bool, rows where the run's scores hold no NaN.
    """
    avail = scored.copy()
    modalities = _as_list(attrs.get("modality"))
    sets = _as_list(attrs.get("features"))
    covered = np.zeros(len(scored), dtype=bool)
    found = False
    for name in sets:
        try:
            fset = fs.feature_set(name)
        except FeatureSetNotFound:
            log.warning("run %r names feature set %r, which is not in the store; its rows count as available",
                        run, name)
            continue
        found = True
        valid = np.asarray(fset.arrays["valid"][: fs.n_videos], dtype=bool).any(axis=1)
        covered |= fset.done() & valid
        if "modality" not in attrs:
            modalities.append(fset.spec.modality)
    if found:
        avail &= covered
    if modalities and all(m == "audio" for m in modalities) and has_audio is not None:
        avail &= has_audio
    return avail


class StoredInputs:
    """Input runs of a store as one stack over all its rows, read from the store on demand.

    Only the ``(N, M)`` availability is held; :meth:`take` reads the runs' scores of the rows
    asked for (whole chunks touched, nothing else) as a :class:`StackInputs`, so fitting on a
    sample and predicting in row blocks never hold an ``(N, M, C)`` array.

    Attributes:
        available: ``(N, M)`` bool, where each run's prediction is usable.
        names: The M run names.
    """

    def __init__(self, fs: FeatureStore, names: Sequence[str], score_types: Sequence[str],
                 available: np.ndarray) -> None:
        self._arrays = [fs.prediction_scores(run) for run in names]
        self._types = list(score_types)
        self.names = tuple(names)
        self.available = available
        self._c = len(fs.classes)

    @property
    def n_models(self) -> int:
        return len(self.names)

    @property
    def n_classes(self) -> int:
        return self._c

    def __len__(self) -> int:
        return len(self.available)

    def take(self, rows: np.ndarray | slice) -> StackInputs:
        """The runs on ``rows`` (a slice, or sorted row indices), read from the store."""
        probs = np.empty((len(self.available[rows]), self.n_models, self._c), np.float32)  # (n, M, C)
        for i, (arr, kind) in enumerate(zip(self._arrays, self._types)):
            block = arr[rows] if isinstance(rows, slice) else \
                arr.get_orthogonal_selection((np.asarray(rows, dtype=np.int64), slice(None)))
            probs[:, i, :] = _as_probability(np.asarray(block), kind)
        return StackInputs(probs, self.available[rows], self.names)


def load_inputs(fs: FeatureStore, runs: Sequence[str]) -> tuple[StoredInputs, list[RunRecord], list[dict[str, Any]]]:
    """The runs of a store as one stack over all its rows (read on demand), checked.

    Each run is read once, a block of rows at a time, for its NaN rows and its range (which
    check or infer its score type); nothing of size ``(N, C)`` is held.

    Returns:
        ``(inputs over all N rows, one RunRecord per run for the leakage rule, the runs' attrs)``.

    Raises:
        PredictionRunNotFound: a run is not in the store.
        InputMismatch: no runs, a run named twice, a run's shape or score type does not fit.
    """
    has_audio = (fs.videos(["has_audio"])["has_audio"].to_numpy(dtype=bool) if "has_audio" in fs.columns
                 else None)
    n, c = fs.n_videos, len(fs.classes)
    records, all_attrs = [], []
    for run in runs:
        attrs = fs.prediction_attrs(run)
        train_splits = tuple(_as_list(attrs.get("train_splits"))) or DEFAULT_TRAIN_SPLITS
        records.append(RunRecord(run, tuple(fs.prediction_scores(run).shape), fs.read_prediction_folds(run),
                                 train_splits))
        all_attrs.append(attrs)
    check_runs(records, n, c)
    avail = np.empty((n, len(runs)), bool)
    types = []
    for i, (run, attrs) in enumerate(zip(runs, all_attrs)):
        arr = fs.prediction_scores(run)
        scored = np.empty(n, bool)
        lo, hi = None, None
        for rows in row_blocks(n, c):
            block = np.asarray(arr[rows])  # (b, C)
            scored[rows] = ~np.isnan(block).any(axis=1)
            b_lo, b_hi = _finite_range(block)
            if b_lo is not None:
                lo, hi = (b_lo, b_hi) if lo is None else (min(lo, b_lo), max(hi, b_hi))
        types.append(score_type_of(attrs.get("score_type"), lo, hi, run))
        avail[:, i] = a = run_availability(fs, run, scored, attrs, has_audio)
        records[i] = dataclasses.replace(records[i], available=a)
        log.info("run %r: available on %d of %d rows", run, int(a.sum()), n)
    return StoredInputs(fs, runs, types, avail), records, all_attrs
