"""The vectors an index holds: per video (mean of valid clips) or per valid clip.

Vectors are float32; for the ``ip`` metric they are L2-normalised, so inner product is cosine
similarity. A feature set is read a storage chunk at a time into one preallocated array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from store.feature_set import FeatureSet

Progress = Callable[..., Iterable[Any]]  # e.g. tqdm: progress(iterable, total=n, desc=...)


def _squared_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", x, x)  # (n, D) -> (n,), without an (n, D) temporary


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, in place (float32); zero rows stay zero."""
    norms = np.sqrt(_squared_norms(x))[:, None]
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def is_unit_norm(x: np.ndarray, tol: float = 1e-4) -> bool:
    """Whether every row has L2 norm 1 (or is zero, as :func:`l2_normalise` leaves it)."""
    sq = _squared_norms(x)
    return bool(np.all((np.abs(sq - 1) <= tol) | (sq == 0)))


def pool_video_vectors(
    data: np.ndarray, valid: np.ndarray, metric: str = "ip"
) -> tuple[np.ndarray, np.ndarray]:
    """One vector per video: the mean of its valid clips (normalised for ``ip``).

    Args:
        data: ``(n, K, D)`` clip features.
        valid: ``(n, K)`` bool mask of real clips.
        metric: ``ip`` (L2-normalise the means) or ``l2`` (keep them).

    Returns:
        ``(vectors (n, D) float32, has_clips (n,) bool)``; rows without a valid clip are zero
        and marked False.
    """
    w = valid.astype(np.float32)  # (n, K)
    count = w.sum(axis=1)  # (n, K) -> (n,)
    sums = np.einsum("nk,nkd->nd", w, data.astype(np.float32, copy=False))  # (n, K, D) -> (n, D)
    vectors = np.divide(sums, count[:, None], out=np.zeros_like(sums), where=count[:, None] > 0)
    if metric == "ip":
        l2_normalise(vectors)
    return vectors, count > 0


def read_vectors(
    fset: FeatureSet,
    level: str,
    metric: str,
    rows: np.ndarray | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Index vectors of a feature set's done rows, read a storage chunk at a time.

    Args:
        fset: A ``store.FeatureSet``.
        level: ``video`` (one vector per row) or ``clip`` (one per valid clip).
        metric: ``ip`` or ``l2`` (see :func:`pool_video_vectors`).
        rows: Only these rows (default: all); rows not done are skipped.
        progress: Wraps the chunk iterator (e.g. ``tqdm``) to show reading progress.

    Returns:
        ``(vectors (n, D) float32, rows (n,) int64, clips (n,) int32 or None, empty)`` where
        ``clips`` gives each vector's clip slot (clip level only) and ``empty`` lists the
        done rows that were skipped because no clip is valid.
    """
    wanted = fset.done()
    if rows is not None:
        mask = np.zeros_like(wanted)
        mask[np.asarray(rows, dtype=np.int64)] = True
        wanted &= mask
    wanted_rows = np.flatnonzero(wanted)
    chunks = np.unique(wanted_rows // fset.chunk_rows).tolist()
    k, d = fset.spec.clips, fset.spec.dim
    cap = len(wanted_rows) * (k if level == "clip" else 1)
    out = np.empty((cap, d), dtype=np.float32)
    out_rows = np.empty(cap, dtype=np.int64)
    out_clips = np.empty(cap, dtype=np.int32) if level == "clip" else None
    empty: list[np.ndarray] = []
    n = 0
    it = fset.iter_chunks(chunks)
    if progress is not None:
        it = progress(it, total=len(chunks), desc=f"reading {fset.name}", unit="chunk")
    for start, data, valid in it:
        local = np.flatnonzero(wanted[start : start + len(data)])
        data, valid = data[local], valid[local]
        has = valid.any(axis=1)
        empty.append(start + local[~has])
        if level == "video":
            vectors, _ = pool_video_vectors(data[has], valid[has], metric)
            row_ids, clip_ids = start + local[has], None
        else:
            r, c = np.nonzero(valid)  # row-major: rows ascending, clips ascending within a row
            vectors = data[r, c]  # (n, K, D) -> (m, D)
            if metric == "ip":
                l2_normalise(vectors)
            row_ids, clip_ids = start + local[r], c
        m = len(vectors)
        out[n : n + m], out_rows[n : n + m] = vectors, row_ids
        if out_clips is not None:
            out_clips[n : n + m] = clip_ids
        n += m
    empty_rows = np.concatenate(empty) if empty else np.empty(0, dtype=np.int64)
    # Leading slices of C-contiguous arrays stay contiguous: no copy.
    return (
        out[:n],
        out_rows[:n],
        None if out_clips is None else out_clips[:n],
        empty_rows.astype(np.int64),
    )
