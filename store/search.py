"""Neighbours of stored videos or of vectors in a feature set, and the labels they vote for.

Library (reused by ``heads.knn`` and ``extract.search``)::

    search_by_vectors(fs, "rgb_r18", vectors, k)          -> (sims (q, k), rows (q, k))
    search_by_rows(fs, "rgb_r18", rows, k)                 -> same, each video left out of its own list
    propagate_labels(sims, rows, fs.labels(), temperature) -> (q, C) similarity-weighted votes
    neighbours(fs, "rgb_r18", rows=... | vectors=..., k)   -> Neighbours(sims, rows, scores)

Command::

    python -m store.search --store x.zarr --features rgb_r18 (--id ID | --vector q.npy) [-k 10]

builds the index if missing (or adds newly extracted rows), prints the neighbours (rank, id,
similarity, labels) and the top propagated label scores.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from store._index_spec import KINDS, LEVELS, IndexSpec
from store.cli import non_negative_int, positive_float, positive_int, run_command
from store.errors import ShapeMismatch, StoreError
from store.feature_set import FeatureSet
from store.feature_store import FeatureStore
from store.index import FeatureIndex, ensure_index, open_index, pool_video_vectors, saved_spec
from store.threads import add_threads_argument, set_threads

logger = logging.getLogger(__name__)
LABEL_CHUNK = 4096  # queries per chunk when gathering neighbour labels: bounds (q, k, C) memory


@dataclass(frozen=True)
class Neighbours:
    """Neighbours of a batch of queries and the label scores they propagate.

    Attributes:
        sims: ``(q, k)`` similarity, best first; ``-inf`` pads missing neighbours.
        rows: ``(q, k)`` store rows of the neighbours; -1 pads.
        scores: ``(q, C)`` similarity-weighted label votes in [0, 1] (see :func:`propagate_labels`).
    """

    sims: np.ndarray
    rows: np.ndarray
    scores: np.ndarray


def _index_of(fs: FeatureStore, features: str, index: FeatureIndex | None) -> FeatureIndex:
    return index if index is not None else open_index(fs.feature_set(features))


def row_vectors(
    fs: FeatureStore, features: str, rows: Sequence[int] | np.ndarray, metric: str = "ip"
) -> np.ndarray:
    """Query vectors of stored videos: the mean of each row's valid clips (normalised for ``ip``).

    Raises:
        StoreError: a row is not extracted (not done, or no valid clip).
    """
    fset = fs.feature_set(features)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    data, valid = fset.read(rows)
    vectors, has_clips = pool_video_vectors(data, valid, metric)
    if not has_clips.all():
        bad = rows[~has_clips]
        raise StoreError(
            f"{len(bad)} query row(s) have no extracted features in {features!r} (e.g. row {bad[0]},"
            f" id {fs.video_ids()[bad[0]]!r}); extract them first or query other rows"
        )
    return vectors


def search_by_vectors(
    fs: FeatureStore,
    features: str,
    vectors: np.ndarray,
    k: int = 10,
    *,
    index: FeatureIndex | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` stored videos most similar to each query vector.

    Args:
        fs: The store.
        features: Feature set name.
        vectors: ``(q, D)`` (or ``(D,)``) query vectors in the feature set's space, e.g. the
            mean of a new video's clip features.
        k: Neighbours per query.
        index: The feature set's index if already open (default: :func:`store.index.open_index`;
            use :func:`store.index.ensure_index` to build or update it first).

    Returns:
        ``(sims (q, k), rows (q, k))``, best first (padding: -inf, -1).
    """
    index = _index_of(fs, features, index)
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors = vectors[None, :] if vectors.ndim == 1 else vectors
    if vectors.ndim != 2 or vectors.shape[1] != index.dim:
        raise ShapeMismatch(
            f"query vectors must have shape (q, {index.dim}) for feature set {features!r},"
            f" got {vectors.shape}"
        )
    return index.search(vectors, k)


def search_by_rows(
    fs: FeatureStore,
    features: str,
    rows: Sequence[int] | np.ndarray,
    k: int = 10,
    *,
    exclude_self: bool = True,
    index: FeatureIndex | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` videos most similar to each stored video of ``rows``.

    The query is the video's mean clip vector (also for clip-level indexes, where a
    neighbour's similarity is that of its closest clip).

    Args:
        fs: The store.
        features: Feature set name.
        rows: Store rows of the query videos.
        k: Neighbours per query.
        exclude_self: Leave each query video out of its own neighbours.
        index: The feature set's index if already open (see :func:`search_by_vectors`).

    Returns:
        ``(sims (q, k), rows (q, k))``, best first (padding: -inf, -1).
    """
    index = _index_of(fs, features, index)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    vectors = row_vectors(fs, features, rows, index.spec.metric)
    return index.search(vectors, k, exclude_rows=rows if exclude_self else None)


def propagate_labels(
    sims: np.ndarray, neighbour_rows: np.ndarray, labels: np.ndarray, temperature: float = 0.1
) -> np.ndarray:
    """Similarity-weighted label votes of the neighbours.

    ``score[q, c] = sum_j w[q, j] * labels[rows[q, j], c]`` with ``w[q] = softmax(sims[q] / T)``
    over the query's real neighbours (rows -1 / sims -inf get weight 0). Scores lie in [0, 1]:
    the weighted fraction of neighbours carrying the label. ``T -> 0`` copies the nearest
    neighbour's labels; large ``T`` is a plain majority vote. A query without neighbours scores 0.

    Args:
        sims: ``(q, k)`` similarities.
        neighbour_rows: ``(q, k)`` store rows of the neighbours (-1: none).
        labels: ``(N, C)`` labels of every store row (e.g. ``fs.labels()``).
        temperature: Softmax temperature T > 0, in similarity units (cosine: 0.1 weighs a
            neighbour 0.1 more similar e times more).

    Returns:
        ``(q, C)`` float32 scores.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    sims = np.asarray(sims, dtype=np.float64)
    neighbour_rows = np.asarray(neighbour_rows, dtype=np.int64)
    if sims.shape != neighbour_rows.shape or sims.ndim != 2:
        raise ShapeMismatch(
            f"sims and neighbour_rows must both be (q, k), got {sims.shape} and {neighbour_rows.shape}"
        )
    real = (neighbour_rows >= 0) & np.isfinite(sims)  # (q, k)
    logits = np.where(real, sims / temperature, -np.inf)
    top = logits.max(axis=1, keepdims=True)
    w = np.where(real, np.exp(logits - np.where(np.isfinite(top), top, 0)), 0.0)  # (q, k)
    total = w.sum(axis=1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
    scores = np.zeros((len(sims), labels.shape[1]), dtype=np.float32)
    for start in range(0, len(sims), LABEL_CHUNK):
        sl = slice(start, start + LABEL_CHUNK)
        neighbour_labels = labels[np.maximum(neighbour_rows[sl], 0)].astype(
            np.float32
        )  # (q, k) -> (q, k, C)
        scores[sl] = np.einsum("qk,qkc->qc", w[sl], neighbour_labels)  # (q, k, C) -> (q, C)
    return scores


def neighbours(
    fs: FeatureStore,
    features: str,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    vectors: np.ndarray | None = None,
    k: int = 10,
    temperature: float = 0.1,
    exclude_self: bool = True,
    index: FeatureIndex | None = None,
) -> Neighbours:
    """Neighbours of stored rows or of vectors (exactly one), with their label votes.

    Args:
        fs: The store.
        features: Feature set name.
        rows: Query by stored videos (see :func:`search_by_rows`).
        vectors: Query by vectors (see :func:`search_by_vectors`).
        k: Neighbours per query.
        temperature: Of the vote weights (see :func:`propagate_labels`).
        exclude_self: With ``rows``, leave each video out of its own neighbours.
        index: The feature set's index if already open.
    """
    if (rows is None) == (vectors is None):
        raise ValueError("give exactly one of rows= or vectors=")
    index = _index_of(fs, features, index)
    if rows is not None:
        sims, nrows = search_by_rows(fs, features, rows, k, exclude_self=exclude_self, index=index)
    else:
        sims, nrows = search_by_vectors(fs, features, vectors, k, index=index)
    return Neighbours(sims, nrows, propagate_labels(sims, nrows, fs.labels(), temperature))


# ---------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m store.search",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--store", required=True, help="the NAME.zarr store")
    p.add_argument("--features", required=True, help="feature set to search")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--id", help="id of a stored video (it is left out of its own neighbours)")
    query.add_argument("--vector", help=".npy file holding one (D,) or (1, D) query vector")
    p.add_argument("-k", type=positive_int, default=10, help="neighbours to show (default 10)")
    p.add_argument(
        "--index",
        choices=KINDS,
        default=None,
        help="index kind (default: the saved one, else auto)",
    )
    p.add_argument(
        "--level",
        choices=LEVELS,
        default=None,
        help="index per video or per clip (default: saved, else video)",
    )
    p.add_argument(
        "--recall-target",
        type=positive_float,
        default=None,
        help="recall@10 to tune an approximate index to (default: saved, else 0.95)",
    )
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="build the index afresh (needed after the features changed)",
    )
    p.add_argument(
        "--temperature",
        type=positive_float,
        default=0.1,
        help="softmax temperature of the label votes (default 0.1)",
    )
    p.add_argument(
        "--top-labels", type=non_negative_int, default=5, help="propagated label scores to show (default 5)"
    )
    p.add_argument("--cpu", action="store_true", help="search on the CPU even if faiss sees a GPU")
    add_threads_argument(p)
    return p


def _requested_spec(fset: FeatureSet, args: argparse.Namespace) -> IndexSpec | None:
    """The spec the flags ask for, on top of the saved one; None if no flag asks anything."""
    changes = {
        name: value
        for name, value in (
            ("kind", args.index),
            ("level", args.level),
            ("recall_target", args.recall_target),
        )
        if value is not None
    }
    if not changes:
        return None
    return dataclasses.replace(saved_spec(fset) or IndexSpec(), **changes)


def _query(fs: FeatureStore, args: argparse.Namespace, dim: int) -> tuple[dict[str, Any], str]:
    """The query (as keyword arguments of :func:`neighbours`) and a title line."""
    if args.id is not None:
        row = int(fs.rows_of([args.id])[0])
        row_vectors(fs, args.features, [row])  # fails now, before any index work, if not extracted
        return {"rows": [row]}, f"neighbours of {args.id} (row {row})"
    try:
        vector = np.load(args.vector, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read query vector {args.vector}: {exc}") from None
    vector = np.asarray(vector, dtype=np.float32)
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.shape != (dim,):
        raise ShapeMismatch(
            f"query vector in {args.vector} has shape {vector.shape}; feature set {args.features!r}"
            f" needs ({dim},)"
        )
    return {"vectors": vector[None, :]}, f"neighbours of the vector in {args.vector}"


def label_names(classes: Sequence[str], multi_hot: np.ndarray, width: int = 60) -> str:
    """Comma-separated names of a multi-hot row, shortened to ``width`` characters."""
    text = ", ".join(classes[c] for c in np.flatnonzero(multi_hot)) or "-"
    return text if len(text) <= width else text[: width - 3] + "..."


def format_neighbours(fs: FeatureStore, result: Neighbours, title: str, *, temperature: float,
                      top_labels: int = 5, query: int = 0) -> str:
    """The neighbour table (rank, id, similarity, labels) and the propagated label scores."""
    ids, labels, classes = fs.video_ids(), fs.labels(), fs.classes
    lines = [title, f"{'rank':>4}  {'id':<24} {'similarity':>10}  labels"]
    for rank, (sim, row) in enumerate(zip(result.sims[query], result.rows[query], strict=True), start=1):
        if row < 0:
            break
        lines.append(f"{rank:>4}  {ids[row]!s:<24} {sim:>10.4f}  {label_names(classes, labels[row])}")
    scores = result.scores[query]
    top = [c for c in np.argsort(-scores, kind="stable")[:top_labels] if scores[c] > 0]
    lines.append(f"propagated label scores (T={temperature:g}): "
                 + (", ".join(f"{classes[c]} {scores[c]:.3f}" for c in top) or "none"))
    return "\n".join(lines)


@run_command
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    # The index is saved inside the store: open it writable when we may.
    fs = FeatureStore.open(args.store, "a" if os.access(args.store, os.W_OK) else "r")
    fset = fs.feature_set(args.features)
    query, title = _query(fs, args, fset.spec.dim)
    index = ensure_index(
        fset,
        _requested_spec(fset, args),
        rebuild=args.rebuild,
        progress=tqdm,
        gpu=False if args.cpu else None,
    )
    result = neighbours(
        fs, args.features, k=args.k, temperature=args.temperature, index=index, **query
    )
    print(f"index: {index.describe()}")
    if "rows" in query:
        title += f"; its labels: {label_names(fs.classes, fs.labels(query['rows'][:1])[0])}"
    print(format_neighbours(fs, result, title, temperature=args.temperature, top_labels=args.top_labels))
    return 0

if __name__ == "__main__":
    sys.exit(main())
