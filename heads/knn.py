"""kNN label transfer: a non-parametric head over a feature set's faiss neighbours, and a label audit.

::

    python -m heads.knn --store x.zarr --features rgb_r18 [--k 10 --temperature 0.1 --folds 5 --run NAME]
    python -m heads.knn --store x.zarr --features rgb_r18 --audit [--out audit.csv --top 100]

Every row is scored by the similarity-weighted label votes of its ``k`` nearest **train**
videos (:func:`store.search.propagate_labels`). Train rows are scored out-of-fold: the train
rows are dealt into ``folds`` folds (:func:`heads.trainer.assign_folds`, the folds
``heads.train --folds`` uses for the same seed), and a row of fold ``j`` searches only the
other folds' vectors, so it never votes for itself or a fold-mate. One in-memory index of
every train row (one k-means) serves all folds: a fold's queries search it through a faiss ID
selector that admits the other folds' vectors. Val, test and other rows search all of it. Query
vectors come from one pass over the feature set, ``QUERY_BLOCK_ROWS`` rows at a time, and an IVF
index searches them grouped by nearest list (:meth:`store.index.FeatureIndex.locality_order`). The
scores become a prediction run
(``score_type="probability"``, fold ids for the train rows) that fusion stacks like any head.

The audit ranks train videos whose labels their neighbours disagree with (candidates for
annotation noise): each train video is scored leave-one-out by every other train video;
``disagreement = 1 - mean over its labels of the score of that label``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heads.trainer import assign_folds, evaluate_scores
from store.cli import non_negative_int, positive_float, positive_int, run_command
from store.errors import VideoFeatError
from store.feature_store import FeatureStore
from store.index import KINDS, FeatureIndex, IndexSpec, Progress, feature_vector_blocks, feature_vectors
from store.search import propagate_labels
from store.threads import add_threads_argument, set_threads

__all__ = ["KnnError", "KnnNeighbours", "knn_neighbours", "knn_predictions", "label_audit", "write_knn_run"]

logger = logging.getLogger(__name__)
SEARCH_BATCH = 16384  # queries per faiss call: bounds the (q, fetch) hit arrays
QUERY_BLOCK_ROWS = 65_536  # store rows whose vectors are read, searched and scored at a time
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # the store's rule for prediction run names
_METRIC_COLUMNS = (("class_map", "class mAP"), ("sample_map", "sample mAP"), ("gap20", "GAP@20"),
                   ("top1", "top-1"), ("top5", "top-5"))


class KnnError(VideoFeatError):
    """A user-caused problem with a kNN run (too few train rows, bad settings)."""


@dataclass(frozen=True, eq=False)
class KnnNeighbours:
    """The train neighbours of every queried row.

    Attributes:
        sims: ``(N, k)`` similarity, best first; ``-inf`` pads (and fills rows not queried).
        rows: ``(N, k)`` store rows of the neighbours, all train rows; -1 pads.
        fold: ``(N,)`` int16 fold a train row was held out in (out-of-fold), -1 for other rows
            and with leave-one-out.
        has_vector: ``(N,)`` bool, rows with a vector (done, at least one valid clip).
        queried: ``(N,)`` bool, rows that were searched (``has_vector`` and asked for).
        indexes: One line per index searched (:meth:`FeatureIndex.describe`).
    """

    sims: np.ndarray
    rows: np.ndarray
    fold: np.ndarray
    has_vector: np.ndarray
    queried: np.ndarray
    indexes: tuple[str, ...]


def _search(index: FeatureIndex, queries: np.ndarray, k: int, exclude: np.ndarray | None,
            allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` in batches of :data:`SEARCH_BATCH` queries (hits among ``allowed`` vectors),
    the queries taken in :meth:`FeatureIndex.locality_order` (same results, fewer list reads)."""
    sims = np.full((len(queries), k), -np.inf, np.float32)
    rows = np.full((len(queries), k), -1, np.int64)
    order = index.locality_order(queries)
    for s in range(0, len(queries), SEARCH_BATCH):
        sl = order[s:s + SEARCH_BATCH]
        sims[sl], rows[sl] = index.search(queries[sl], k, exclude_rows=None if exclude is None else exclude[sl],
                                          allowed=allowed)
    return sims, rows


def knn_neighbours(fs: FeatureStore, features: str, *, k: int = 10, folds: int = 5, seed: int = 0,
                   index_spec: IndexSpec | None = None, rows: Sequence[int] | np.ndarray | None = None,
                   progress: Progress | None = None) -> KnnNeighbours:
    """The ``k`` nearest train videos of each row, never the row itself nor (out-of-fold) a fold-mate.

    Args:
        fs: The store.
        features: Feature set name.
        k: Neighbours per row.
        folds: ``>= 2``: train rows are searched out-of-fold; ``0``: leave-one-out (each train
            row searches every other train row; its fold stays -1).
        seed: Seed of the fold assignment.
        index_spec: Settings of the in-memory indexes (default ``IndexSpec()``: exact below
            20k train vectors, else IVF tuned to recall@10 0.95). Queries are always per-video
            mean vectors; ``level="clip"`` indexes every valid train clip.
        rows: Rows to search (default all); rows without a vector are skipped.
        progress: Wraps the train-vector reader, the index build and the query blocks, e.g. ``tqdm``.

    Raises:
        KnnError: ``k < 1``, ``folds`` of 1 or below 0, or fewer than 2 train rows with a vector.
        StoreError: unknown feature set.
    """
    if k < 1 or folds == 1 or folds < 0:
        raise KnnError(f"need k >= 1 and folds 0 (leave-one-out) or >= 2, got k={k}, folds={folds}")
    spec = index_spec or IndexSpec()
    fset = fs.feature_set(features)
    n = fs.n_videos
    # A row has a vector when it is done and has a valid clip (as feature_vectors reads them).
    has_vector = fset.done() & np.asarray(fset.arrays["valid"][:n], dtype=bool).any(axis=1)  # (N, K) -> (N,)
    is_train = np.zeros(n, bool)
    is_train[fs.split_rows("train")] = True
    if int((is_train & has_vector).sum()) < 2:
        raise KnnError(f"only {int((is_train & has_vector).sum())} train row(s) have features in {features!r};"
                       " kNN needs at least 2: extract the train split (or set the split column) first")
    wanted = np.zeros(n, bool)
    wanted[np.arange(n) if rows is None else np.asarray(rows, np.int64)] = True
    queried = wanted & has_vector

    # Fold of every done train row, dealt as heads.train deals them (same seed, same folds).
    fold = np.full(n, -1, np.int16)
    if folds:
        done_train = np.flatnonzero(is_train & fset.done())
        fold[done_train] = assign_folds(len(done_train), folds, seed)

    # One index over every train vector (one k-means for all folds); a fold's queries search
    # it through an ID selector that admits only the other folds' vectors. Only the train
    # vectors are read for it, and freed once indexed (the index holds its own copy or codes).
    ivec, irows, iclips = feature_vectors(fset, level=spec.level, metric=spec.metric,
                                          rows=np.flatnonzero(is_train), progress=progress)
    index = FeatureIndex.from_vectors(ivec, irows, spec, clips=iclips, progress=progress)
    del ivec
    described = (f"all train: {index.describe()}",)
    pools = [fold[irows] != j for j in range(folds)]  # (n_indexed,) bool per fold
    for j, pool in enumerate(pools):
        if not pool.any():
            logger.warning("fold %d: no train vector outside the held-out rows; its rows get no neighbours", j)

    sims = np.full((n, k), -np.inf, np.float32)
    nrows = np.full((n, k), -1, np.int64)
    # Query vectors come QUERY_BLOCK_ROWS rows at a time from one pass over the set: memory is
    # O(block), not O(N x D).
    for q, block in feature_vector_blocks(fset, block_rows=QUERY_BLOCK_ROWS, metric=spec.metric,
                                          rows=np.flatnonzero(queried), progress=progress):  # (b, D), (b,)
        groups = [(fold[block] == j, pools[j]) for j in range(folds)] + [(fold[block] < 0, None)]
        for sel, pool in groups:
            if not sel.any() or (pool is not None and not pool.any()):
                continue
            r = block[sel]
            sims[r], nrows[r] = _search(index, q[sel], k, None if folds else r, pool)
    return KnnNeighbours(sims, nrows, fold, has_vector, queried, described)


def knn_predictions(fs: FeatureStore, features: str, *, k: int = 10, temperature: float = 0.1, folds: int = 5,
                    seed: int = 0, index_spec: IndexSpec | None = None,
                    progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """kNN label-transfer scores of every row (train rows out-of-fold).

    Args:
        fs: The store.
        features: Feature set name.
        k: Neighbours per row.
        temperature: Softmax temperature of the vote weights (:func:`store.search.propagate_labels`).
        folds: Folds of the train rows (``>= 2``), or 0 for leave-one-out.
        seed: Seed of the fold assignment.
        index_spec: Settings of the in-memory indexes (see :func:`knn_neighbours`).
        progress: Wraps long loops, e.g. ``tqdm``.

    Returns:
        ``(scores (N, C) float32 in [0, 1], fold (N,) int16)``: rows without a vector score 0;
        fold is the held-out fold of each train row, -1 elsewhere.
    """
    nb = knn_neighbours(fs, features, k=k, folds=folds, seed=seed, index_spec=index_spec, progress=progress)
    return propagate_labels(nb.sims, nb.rows, fs.labels(), temperature), nb.fold


@dataclass(frozen=True, eq=False)
class KnnRun:
    """What :func:`write_knn_run` computed and wrote.

    Attributes:
        run: Prediction run name (its scores are in the store, not held here).
        fold: ``(N,)`` fold ids.
        attrs: The run's attrs (settings, indexes, ``metrics``: val / test / train_oof / rows).
    """

    run: str
    fold: np.ndarray
    attrs: dict[str, Any]


def write_knn_run(fs: FeatureStore, features: str, *, run: str | None = None, k: int = 10,
                  temperature: float = 0.1, folds: int = 5, seed: int = 0, index_spec: IndexSpec | None = None,
                  progress: Progress | None = None) -> KnnRun:
    """Score every row (:func:`knn_predictions`), evaluate, and write the prediction run.

    Scores are made and written in blocks of :data:`QUERY_BLOCK_ROWS` rows; beyond the index
    and the ``(N, k)`` neighbours, only the evaluated rows' scores are held (for the metrics).

    Metrics (:func:`heads.metrics.evaluate`) are taken on the val and test rows that have a
    vector, and on the train rows out-of-fold; rows without a vector score 0 and are counted.

    Args:
        run: Run name (default ``knn_<features>_k<k>``); an existing run is replaced.
        Others: as :func:`knn_predictions`.

    Raises:
        KnnError: bad settings or run name, too few train rows.
        StoreError: store opened read-only, unknown feature set.
    """
    run = run or f"knn_{features}_k{k}"
    if not _RUN_NAME.match(run):
        raise KnnError(f"invalid run name {run!r}: use letters, digits, '_', '-', '.' (not leading)")
    if temperature <= 0:
        raise KnnError(f"temperature must be > 0, got {temperature}")
    spec = index_spec or IndexSpec()
    nb = knn_neighbours(fs, features, k=k, folds=folds, seed=seed, index_spec=spec, progress=progress)
    labels = fs.labels()
    counts = {"scored": int(nb.queried.sum()), "missing": int((~nb.has_vector).sum())}
    keys = {"val": "val", "test": "test", "train": "train_oof"}
    evaluated = {split: fs.split_rows(split) for split in keys if split != "train" or folds}
    evaluated = {split: r[nb.has_vector[r]] for split, r in evaluated.items()}  # sorted rows
    kept = {split: np.empty((len(r), labels.shape[1]), np.float32) for split, r in evaluated.items()}  # (n_s, C)
    fset = fs.feature_set(features)
    attrs = {"head": "knn", "features": [features], "modality": fset.spec.modality, "k": k,
             "temperature": temperature, "folds": folds, "seed": seed, "score_type": "probability",
             "train_splits": ["train"], "index_spec": spec.to_dict(), "indexes": list(nb.indexes),
             "missing_rows": counts["missing"]}
    # Scores are made and written QUERY_BLOCK_ROWS rows at a time; only the evaluated splits'
    # rows are kept (each row once) for the metrics.
    with fs.prediction_writer(run, attrs) as writer:
        for a in range(0, fs.n_videos, QUERY_BLOCK_ROWS):
            b = min(a + QUERY_BLOCK_ROWS, fs.n_videos)
            block = propagate_labels(nb.sims[a:b], nb.rows[a:b], labels, temperature)  # (b - a, C)
            writer.write(a, block, nb.fold[a:b])
            for split, r in evaluated.items():
                lo, hi = np.searchsorted(r, [a, b])
                kept[split][lo:hi] = block[r[lo:hi] - a]
        fold, has_vector = nb.fold, nb.has_vector
        del nb, block  # the (N, k) neighbours and the last score block are written: freed for the metrics
        metrics: dict[str, Any] = {key: None for key in keys.values()}
        for split, r in evaluated.items():
            metrics[keys[split]] = evaluate_scores(kept.pop(split), labels[r])
        metrics["rows"] = {**counts, **{split: int(has_vector[fs.split_rows(split)].sum()) for split in keys}}
        writer.attrs["metrics"] = metrics
    logger.info("wrote prediction run %r: %d rows scored, %d without features", run, counts["scored"],
                counts["missing"])
    return KnnRun(run, fold, writer.attrs)


def label_audit(fs: FeatureStore, features: str, *, k: int = 10, temperature: float = 0.1,
                index_spec: IndexSpec | None = None, show_neighbours: int = 5,
                progress: Progress | None = None) -> pd.DataFrame:
    """Train videos ranked by how much their neighbours disagree with their labels.

    Each train video with a vector and at least one label is scored leave-one-out by its ``k``
    nearest other train videos. ``disagreement = 1 - mean_{c in labels} score[c]`` (0: every
    neighbour carries all its labels; 1: none carries any). The strongest label the video lacks
    is suggested with its score. Ties rank by that score, then by row.

    Returns:
        A table, best candidates first, with columns ``rank``, ``id``, ``path``, ``labels``
        (names joined by ``;``), ``disagreement``, ``missing_label_suggested`` (empty when no
        neighbour carries a label it lacks), ``missing_label_score``, ``neighbour_ids`` (the
        nearest ``show_neighbours``, joined by ``;``) and ``row``.
    """
    if temperature <= 0:
        raise KnnError(f"temperature must be > 0, got {temperature}")
    labels = fs.labels()
    train = fs.split_rows("train")
    labelled = train[labels[train].any(axis=1)]
    if len(labelled) < len(train):
        logger.info("audit skips %d unlabelled train row(s)", len(train) - len(labelled))
    nb = knn_neighbours(fs, features, k=k, folds=0, index_spec=index_spec, rows=labelled, progress=progress)
    r = labelled[nb.queried[labelled]]
    if len(r) < len(labelled):
        logger.info("audit skips %d train row(s) without features", len(labelled) - len(r))
    scores = propagate_labels(nb.sims[r], nb.rows[r], labels, temperature)  # (n, C)
    own = labels[r].astype(bool)
    disagreement = 1.0 - (scores * own).sum(axis=1) / own.sum(axis=1)
    lacking = np.where(own, -1.0, scores)  # (n, C): scores of the labels a video lacks
    best = lacking.argmax(axis=1)
    best_score = np.maximum(lacking[np.arange(len(r)), best], 0.0)
    order = np.lexsort((r, -best_score, -disagreement))
    classes = np.asarray(fs.classes, dtype=object)
    videos = fs.videos(["id", "path"])
    ids = videos["id"].to_numpy()
    shown = nb.rows[r][:, :show_neighbours]
    r, own, best, best_score, disagreement, shown = (a[order] for a in (r, own, best, best_score,
                                                                        disagreement, shown))
    return pd.DataFrame({
        "rank": np.arange(1, len(r) + 1),
        "id": ids[r],
        "path": videos["path"].to_numpy()[r],
        "labels": [";".join(classes[o]) for o in own],
        "disagreement": disagreement.round(6),
        "missing_label_suggested": np.where(best_score > 0, classes[best], ""),
        "missing_label_score": best_score.round(6),
        "neighbour_ids": [";".join(ids[x] for x in row if x >= 0) for row in shown],
        "row": r,
    })


# ---------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(prog="python -m heads.knn", description=doc[0],
                                epilog="\n\n".join(part for part in doc[1:] if part.strip() != "::"),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="the NAME.zarr store")
    p.add_argument("--features", required=True, help="feature set whose neighbours vote")
    p.add_argument("-k", "--k", type=positive_int, default=10, help="neighbours per video (default 10)")
    p.add_argument("--temperature", type=positive_float, default=0.1,
                   help="softmax temperature of the votes, in cosine units (default 0.1)")
    p.add_argument("--folds", type=non_negative_int, default=5,
                   help="folds of the out-of-fold train scores, >= 2; 0: leave-one-out (default 5)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the fold assignment (default 0)")
    p.add_argument("--run", help="prediction run name (default knn_<features>_k<K>)")
    p.add_argument("--index", choices=KINDS, default="auto",
                   help="index kind of the in-memory indexes (default auto: exact below 20k train vectors)")
    p.add_argument("--level", choices=("video", "clip"), default="video",
                   help="index one mean vector per video or every clip (default video)")
    p.add_argument("--recall-target", type=positive_float, default=0.95,
                   help="recall@10 an approximate index is tuned to (default 0.95)")
    p.add_argument("--cpu", action="store_true", help="search on the CPU even if faiss sees a GPU")
    add_threads_argument(p)
    a = p.add_argument_group("label audit")
    a.add_argument("--audit", action="store_true",
                   help="rank train videos whose labels their neighbours disagree with; each is scored by all other "
                        "train videos (leave-one-out: --folds/--seed do not apply); writes a CSV, no run")
    a.add_argument("--out", type=Path, help="audit CSV (default knn_audit_<features>.csv)")
    a.add_argument("--top", type=positive_int, help="keep only the N strongest candidates in the CSV (default all)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def _metrics_table(run: KnnRun) -> str:
    m = run.attrs["metrics"]
    lines = [f"{'split':<12}{'rows':>8}" + "".join(f"{title:>12}" for _, title in _METRIC_COLUMNS)]
    for key, title, split in (("val", "val", "val"), ("test", "test", "test"),
                              ("train_oof", "train (OOF)", "train")):
        if m.get(key):
            lines.append(f"{title:<12}{m['rows'][split]:>8}"
                         + "".join(f"{m[key][name]:>12.4f}" for name, _ in _METRIC_COLUMNS))
    if len(lines) == 1:
        lines.append("(no labelled val / test rows with features: nothing to evaluate)")
    if m["rows"]["missing"]:
        lines.append(f"{m['rows']['missing']} row(s) without features scored 0")
    return "\n".join(lines)


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)


@run_command(path_errors=True)  # OSError: an unwritable --out
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    progress = None if args.quiet else tqdm
    if not args.audit and (args.out is not None or args.top is not None):
        raise KnnError("--out and --top belong to --audit; add --audit or drop them")
    spec = IndexSpec(kind=args.index, level=args.level, recall_target=args.recall_target, gpu=not args.cpu)
    fs = FeatureStore.open(args.store, "r" if args.audit else "a")
    if args.audit:
        table = label_audit(fs, args.features, k=args.k, temperature=args.temperature, index_spec=spec,
                            progress=progress)
        table = table.head(args.top) if args.top else table
        out = args.out or Path(f"knn_audit_{args.features}.csv")
        _write_csv(table, out)
    else:
        run = write_knn_run(fs, args.features, run=args.run, k=args.k, temperature=args.temperature,
                            folds=args.folds, seed=args.seed, index_spec=spec, progress=progress)
    if args.audit:
        with pd.option_context("display.width", 160, "display.max_colwidth", 40):
            print(table.head(20).drop(columns=["path", "row"]).to_string(index=False))
        print(f"wrote {len(table)} audited train video(s), most suspicious first, to {out}")
        return 0
    print(f"kNN label transfer over {args.features!r}: k={args.k}, T={args.temperature:g}, "
          + (f"{args.folds}-fold out-of-fold train scores" if args.folds else "leave-one-out train scores"))
    for line in run.attrs["indexes"][:1]:
        print(f"index {line}")
    print(_metrics_table(run))
    print(f"wrote prediction run {run.run!r} to {args.store}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
