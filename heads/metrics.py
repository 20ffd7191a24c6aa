"""Multi-label video metrics: class/sample mAP, GAP@k, hit@1, PERR, top-k accuracy.

Every function takes ``scores (N, C)`` (any real numbers; higher means more likely) and
``labels (N, C)`` in {0, 1}, as numpy arrays or torch tensors (converted on the CPU), and is
exact and vectorised: no Python loop over videos or classes, only over blocks of rows (or of
classes for class AP) of about ``_BLOCK_ELEMENTS`` scores, so the temporaries stay O(block),
not O(N x C). Scores are read as they are: float32 stays float32 (the order and the ties of
float32 values are those of their exact float64 copies, so the results do not change), no
copy of the score matrix is made; 1-byte 0/1 labels are viewed as bool, not copied. GAP pools
the kept ``top_k`` scores of every video (O(N x top_k)). Equations and references:
heads/README.md, "Metrics".

Ties follow one rule each, all deterministic:
- average precision (class mAP, sample mAP, the pooled ranking of GAP) treats tied scores as
  one threshold step, exactly like scikit-learn's ``average_precision_score``;
- hit@1, top-k accuracy and PERR count ties at the cut-off as the expected value over a
  random order of the tied classes;
- GAP keeps exactly ``top_k`` classes per video, breaking ties at the k-th score by class id.

Videos (or classes) without a positive cannot be scored by AP, PERR or top-k: they are
skipped and counted, never turned into NaN. Labels without any positive at all raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

logger = logging.getLogger(__name__)

_BLOCK_ELEMENTS = 1 << 20  # scores per block: ~70 MB of AP temporaries


@dataclass(frozen=True, eq=False)
class MapResult:
    """Class-level mAP.

    Attributes:
        value: mean AP over the classes that have at least one positive.
        per_class: ``(C,)`` AP per class, NaN for a class without positives.
        n_skipped: number of classes without positives.
    """

    value: float
    per_class: np.ndarray
    n_skipped: int


@dataclass(frozen=True, eq=False)
class SampleMapResult:
    """Sample-level mAP (per-video AP averaged over videos).

    Attributes:
        value: mean AP over the videos that have at least one positive.
        per_sample: ``(N,)`` AP per video, NaN for a video without positives.
        n_skipped: number of videos without positives.
    """

    value: float
    per_sample: np.ndarray
    n_skipped: int


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; torch itself is not imported here
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()  # numpy has no bfloat16; float16/bfloat16 -> float32 is exact
        return x.numpy()
    return np.asarray(x)


def _row_blocks(n_rows: int, n_cols: int) -> Iterator[slice]:
    """Slices of consecutive rows holding about ``_BLOCK_ELEMENTS`` elements each."""
    rows = max(1, _BLOCK_ELEMENTS // max(n_cols, 1))
    for i in range(0, n_rows, rows):
        yield slice(i, i + rows)


def _is_binary(y: np.ndarray) -> bool:
    """Whether every label is 0 or 1, without an ``(N, C)`` temporary."""
    if y.dtype == bool:
        return True
    if np.issubdtype(y.dtype, np.integer):
        return bool(y.min() >= 0 and y.max() <= 1)
    return all(bool(((y[b] == 0) | (y[b] == 1)).all()) for b in _row_blocks(*y.shape))


def _prepare(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return scores as float32/float64 (not copied when they are one already) and labels as
    bool (a view of 1-byte labels), both ``(N, C)``, after checking them."""
    s, y = _to_numpy(scores), _to_numpy(labels)
    if s.ndim != 2 or s.shape != y.shape or 0 in s.shape:
        raise ValueError(
            f"expected non-empty scores and labels of the same shape (N, C), got {s.shape} and "
            f"{y.shape}; check that both come from the same rows of the store"
        )
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float32 if s.dtype == np.float16 else np.float64)  # both exact
    if any(np.isnan(s[b]).any() for b in _row_blocks(*s.shape)):
        raise ValueError("scores contain NaN; fix the model output before evaluating")
    if y.dtype != bool:
        if not _is_binary(y):
            raise ValueError("labels must be 0/1; threshold soft (mixup) labels before evaluating")
        y = y.view(bool) if y.dtype.itemsize == 1 else y.astype(bool)  # 0/1 bytes are valid bools
    if not y.any():
        raise ValueError(
            "labels have no positive entry, so no metric is defined; "
            "check that labels are aligned with scores and the split is not empty"
        )
    return s, y


def _ap_block(scores: np.ndarray, hits: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """AP of each row: sum over positives of the precision at the end of their tie group."""
    length = scores.shape[1]
    order = np.argsort(-scores, axis=1)  # descending; order inside a tie does not matter
    s = np.take_along_axis(scores, order, axis=1)
    h = np.take_along_axis(hits, order, axis=1)
    tp = np.cumsum(h, axis=1)  # (M, L) true positives up to each position
    is_end = np.ones(s.shape, dtype=bool)  # last position of each group of tied scores
    is_end[:, :-1] = s[:, :-1] != s[:, 1:]
    end = np.where(is_end, np.arange(length), length - 1)
    end = np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]  # group end of each position
    precision = np.take_along_axis(tp, end, axis=1) / (end + 1.0)
    total = (precision * h).sum(axis=1)
    return np.divide(total, n_pos, out=np.full(len(s), np.nan), where=n_pos > 0)


def _ap_rows(scores: np.ndarray, hits: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """AP of each row of ``(M, L)`` with ``n_pos`` positives in all (NaN where 0)."""
    rows = max(1, _BLOCK_ELEMENTS // scores.shape[1])
    return np.concatenate(
        [
            _ap_block(scores[i : i + rows], hits[i : i + rows], n_pos[i : i + rows])
            for i in range(0, len(scores), rows)
        ]
    )


def _class_ap(s: np.ndarray, y: np.ndarray, n_pos: np.ndarray) -> np.ndarray:
    """``(C,)`` AP of each class of prepared ``(N, C)`` scores, a block of classes at a time."""
    n, c = s.shape
    step = max(1, _BLOCK_ELEMENTS // n)
    per_class = np.empty(c)
    for a in range(0, c, step):
        b = min(c, a + step)
        # (N, c_block) -> (c_block, N): one contiguous row per class
        per_class[a:b] = _ap_block(np.ascontiguousarray(s[:, a:b].T), np.ascontiguousarray(y[:, a:b].T), n_pos[a:b])
    return per_class


def class_map(scores: Any, labels: Any) -> MapResult:
    """Class-level mAP: AP of each class over videos, averaged over classes with positives."""
    s, y = _prepare(scores, labels)
    n_pos = y.sum(axis=0)
    per_class = _class_ap(s, y, n_pos)
    n_skipped = int((n_pos == 0).sum())
    if n_skipped:
        logger.debug("class mAP skips %d of %d classes without positives", n_skipped, len(n_pos))
    return MapResult(float(per_class[n_pos > 0].mean()), per_class, n_skipped)


def sample_map(scores: Any, labels: Any) -> SampleMapResult:
    """Sample-level mAP as Multi-MiT scores it: AP of each video over classes, averaged over
    the videos with at least one positive (the others are skipped and counted)."""
    s, y = _prepare(scores, labels)
    n_pos = y.sum(axis=1)
    per_sample = _ap_rows(s, y, n_pos)
    n_skipped = int((n_pos == 0).sum())
    if n_skipped:
        logger.debug("sample mAP skips %d of %d videos without positives", n_skipped, len(n_pos))
    return SampleMapResult(float(per_sample[n_pos > 0].mean()), per_sample, n_skipped)


def _kth_largest(s: np.ndarray, k: np.ndarray | int) -> np.ndarray:
    """The k-th largest score of each row (k 1-based, scalar or per row) as ``(N, 1)``."""
    if np.ndim(k) == 0:
        return -np.partition(-s, int(k) - 1, axis=1)[:, int(k) - 1 : int(k)]
    ranked = -np.sort(-s, axis=1)  # (N, C) descending
    return np.take_along_axis(ranked, (np.asarray(k) - 1)[:, None], axis=1)


def gap(scores: Any, labels: Any, top_k: int = 20) -> float:
    """Global average precision at ``top_k`` (YouTube-8M).

    Each video keeps its ``top_k`` highest scores (ties at the k-th score broken by lower
    class id); all kept (score, hit) pairs are pooled and ranked, and
    ``GAP = sum_i precision(i) * hit(i) / P`` where ``P`` counts every positive label,
    including those outside the kept top-k. Tied pooled scores form one threshold step.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    s, y = _prepare(scores, labels)
    k = min(top_k, s.shape[1])
    kept_s, kept_h = [], []
    for b in _row_blocks(*s.shape):
        sb, yb = s[b], y[b]
        kth = _kth_largest(sb, k)
        above, tied = sb > kth, sb == kth
        room = k - above.sum(axis=1, keepdims=True)  # how many tied classes still fit
        keep = above | (tied & (np.cumsum(tied, axis=1) <= room))  # exactly k per row
        kept_s.append(sb[keep])
        kept_h.append(yb[keep])
    pooled_s, pooled_h = np.concatenate(kept_s)[None, :], np.concatenate(kept_h)[None, :]  # -> (1, N * k)
    return float(_ap_rows(pooled_s, pooled_h, np.array([y.sum()]))[0])


def _mean_over_positive_rows(s: np.ndarray, y: np.ndarray, per_row: Callable[[np.ndarray, np.ndarray], np.ndarray],
                             name: str) -> float:
    """Mean of ``per_row(scores, labels)`` over the videos with a positive, a block of rows at a time."""
    total, count = 0.0, 0
    for b in _row_blocks(*s.shape):
        sb, yb = s[b], y[b]
        has_pos = yb.any(axis=1)
        if not has_pos.all():
            sb, yb = sb[has_pos], yb[has_pos]
        if len(sb):
            total += float(per_row(sb, yb).sum())
            count += len(sb)
    if count < len(s):
        logger.debug("%s skips %d videos without positives", name, len(s) - count)
    return total / count


def top_k_accuracy(scores: Any, labels: Any, k: int) -> float:
    """Multi-label top-k accuracy: the fraction of videos (with a positive) for which at least
    one of the ``k`` highest-scored classes is a positive.

    When classes tie at the k-th score, only some of them fit in the top k; a video then
    scores the probability of a hit under a uniformly random order of the tied classes,
    ``1 - C(g - q, m) / C(g, m)`` (``g`` tied classes, ``q`` of them positive, ``m`` places).
    ``k`` larger than C means C.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s, y = _prepare(scores, labels)
    k = min(k, s.shape[1])
    return _mean_over_positive_rows(s, y, lambda sb, yb: _top_k_hits(sb, yb, k), f"top-{k} accuracy")


def _top_k_hits(s: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """``(n,)`` expected top-k hit of each row (every row has a positive)."""
    kth = _kth_largest(s, k)
    above, tied = s > kth, s == kth
    hit_above = (above & y).any(axis=1)
    g, q = tied.sum(axis=1), (tied & y).sum(axis=1)
    m = k - above.sum(axis=1)  # places left for tied classes, 1 <= m <= g
    # P(no positive among m of g tied classes) = C(g - q, m) / C(g, m)
    free = g - q
    log_miss = (
        gammaln(free + 1)
        - gammaln(np.maximum(free - m, 0) + 1)
        - gammaln(g + 1)
        + gammaln(g - m + 1)
    )
    p_miss = np.where(free >= m, np.exp(log_miss), 0.0)
    return np.where(hit_above, 1.0, 1.0 - p_miss)


def hit_at_1(scores: Any, labels: Any) -> float:
    """Hit@1 (YouTube-8M): fraction of videos whose top-scored class is a positive; equal to
    :func:`top_k_accuracy` with ``k=1`` (a tie at the top scores the fraction of tied
    positives)."""
    return top_k_accuracy(scores, labels, 1)


def perr(scores: Any, labels: Any) -> float:
    """Precision at equal recall rate (YouTube-8M): for a video with ``R`` positives, the
    precision of its ``R`` highest-scored classes, averaged over videos with a positive.

    Classes tied at the R-th score count as the expected value over a random order of the tie.
    """
    s, y = _prepare(scores, labels)
    return _mean_over_positive_rows(s, y, _perr_rows, "PERR")


def _perr_rows(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(n,)`` expected precision at the R-th place of each row (every row has a positive)."""
    n_pos = y.sum(axis=1)
    kth = _kth_largest(s, n_pos)
    above, tied = s > kth, s == kth
    places = n_pos - above.sum(axis=1)  # R-th place falls inside the tie: 1 <= places <= tie
    hits = (above & y).sum(axis=1) + places * (tied & y).sum(axis=1) / tied.sum(axis=1)
    return hits / n_pos


def per_class_ap_table(
    scores: Any, labels: Any, class_names: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per-class AP as a table indexed by class id.

    Returns:
        DataFrame with columns ``class`` (name, or the id as text), ``ap`` (NaN for a class
        without positives) and ``n_positives``.
    """
    s, y = _prepare(scores, labels)
    if class_names is None:
        class_names = [str(c) for c in range(s.shape[1])]
    if len(class_names) != s.shape[1]:
        raise ValueError(
            f"got {len(class_names)} class names for {s.shape[1]} score columns; "
            "pass the store's classes (FeatureStore.classes)"
        )
    result = class_map(s, y)
    table = pd.DataFrame(
        {"class": list(class_names), "ap": result.per_class, "n_positives": y.sum(axis=0)}
    )
    table.index.name = "class_id"
    return table


def evaluate(scores: Any, labels: Any) -> dict[str, float]:
    """All summary metrics at once, as plain floats.

    Returns:
        ``{"class_map", "sample_map", "gap20", "hit1", "perr", "top1", "top5"}``; ``hit1`` and
        ``top1`` are the same number (YouTube-8M and Moments-in-Time names).
    """
    s, y = _prepare(scores, labels)
    return {
        "class_map": class_map(s, y).value,
        "sample_map": sample_map(s, y).value,
        "gap20": gap(s, y, top_k=20),
        "hit1": hit_at_1(s, y),
        "perr": perr(s, y),
        "top1": top_k_accuracy(s, y, 1),
        "top5": top_k_accuracy(s, y, 5),
    }
