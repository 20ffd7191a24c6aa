"""The vectors an index holds: per video (mean of valid clips) or per valid clip.

Vectors are float32; for the ``ip`` metric they are L2-normalised, so inner product is cosine
similarity. A feature set is read a storage chunk at a time into one preallocated array.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


def iter_vector_chunks(
    fset: FeatureSet,
    level: str,
    metric: str,
    rows: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]]:
    """Index vectors of a feature set's done rows, one storage chunk at a time, in row order.

    ``done`` and ``valid`` are read once for the whole pass (:meth:`FeatureSet.iter_chunks`),
    so a caller that needs the vectors in blocks should take them from one pass of this
    rather than from one :func:`read_vectors` call per block.

    Args:
        fset: A ``store.FeatureSet``.
        level: ``video`` (one vector per row) or ``clip`` (one per valid clip).
        metric: ``ip`` or ``l2`` (see :func:`pool_video_vectors`).
        rows: Only these rows (default: all); rows not done are skipped.
        progress: Wraps the chunk iterator (e.g. ``tqdm``) to show reading progress.

    Yields:
        ``(vectors (m, D) float32, rows (m,) int64, clips (m,) int32 or None, empty)`` per
        chunk with a wanted row, where ``clips`` gives each vector's clip slot (clip level
        only) and ``empty`` lists the chunk's wanted done rows that have no valid clip.
    """
    wanted = fset.done()
    if rows is not None:
        mask = np.zeros_like(wanted)
        mask[np.asarray(rows, dtype=np.int64)] = True
        wanted &= mask
    chunks = np.unique(np.flatnonzero(wanted) // fset.chunk_rows).tolist()
    it = fset.iter_chunks(chunks)
    if progress is not None:
        it = progress(it, total=len(chunks), desc=f"reading {fset.name}", unit="chunk")
    for start, data, valid in it:
        local = np.flatnonzero(wanted[start : start + len(data)])
        data, valid = data[local], valid[local]
        has = valid.any(axis=1)
        empty = (start + local[~has]).astype(np.int64)
        if level == "video":
            vectors, _ = pool_video_vectors(data[has], valid[has], metric)
            yield vectors, (start + local[has]).astype(np.int64), None, empty
        else:
            r, c = np.nonzero(valid)  # row-major: rows ascending, clips ascending within a row
            vectors = data[r, c]  # (n, K, D) -> (m, D)
            if metric == "ip":
                l2_normalise(vectors)
            yield vectors, (start + local[r]).astype(np.int64), c.astype(np.int32), empty


def read_vectors(
    fset: FeatureSet,
    level: str,
    metric: str,
    rows: np.ndarray | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """All of :func:`iter_vector_chunks` in one preallocated array.

    Returns:
        ``(vectors (n, D) float32, rows (n,) int64, clips (n,) int32 or None, empty)``: as
        :func:`iter_vector_chunks` yields them, concatenated.
    """
    wanted = fset.done()
    n_wanted = int(wanted.sum()) if rows is None else int(wanted[np.unique(np.asarray(rows, np.int64))].sum())
    cap = n_wanted * (fset.spec.clips if level == "clip" else 1)
    out = np.empty((cap, fset.spec.dim), dtype=np.float32)
    out_rows = np.empty(cap, dtype=np.int64)
    out_clips = np.empty(cap, dtype=np.int32) if level == "clip" else None
    empty: list[np.ndarray] = []
    n = 0
    for vectors, row_ids, clip_ids, none in iter_vector_chunks(fset, level, metric, rows, progress):
        m = len(vectors)
        out[n : n + m], out_rows[n : n + m] = vectors, row_ids
        if out_clips is not None:
            out_clips[n : n + m] = clip_ids
        empty.append(none)
        n += m
    empty_rows = np.concatenate(empty) if empty else np.empty(0, dtype=np.int64)
    # Leading slices of C-contiguous arrays stay contiguous: no copy.
    return out[:n], out_rows[:n], None if out_clips is None else out_clips[:n], empty_rows
