"""faiss nearest-neighbour indexes over a feature set, saved beside it.

::

    features/<set>/index/faiss.index   the index, CPU form (faiss.write_index)
                        /rows.npy      store row of each vector (n,); clip level: (n, 2) row, clip
                        /meta.json     IndexSpec, plan, tuned nprobe/efSearch, measured recall,
                                       the feature set's provenance fingerprint, counts, times

:func:`build_index` reads the done rows (per video: mean of valid clips, L2-normalised), picks
and tunes an index (``kind="auto"``: rule in ``store/README.md``) and saves it
atomically. :func:`open_index` refuses an index whose feature set changed
(:class:`StaleIndex`); :func:`update_index` adds rows extracted since the build;
:func:`ensure_index` does whichever is needed. Queries: ``FeatureIndex.search`` and the
store-level helpers in ``store.search``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from store._feature_index import FeatureIndex, read_meta, utc_now
from store._index_factory import (
    IndexPlan,
    gpu_available,
    plan_index,
    search_param_candidates,
    set_search_param,
)
from store._index_spec import KINDS, IndexNotFound, IndexSpec, InvalidIndexSpec, StaleIndex
from store._index_vectors import Progress, iter_vector_chunks, l2_normalise, pool_video_vectors, read_vectors
from store._synthetic import clustered_vectors
from store.feature_set import FeatureSet

__all__ = [
    "FeatureIndex",
    "IndexNotFound",
    "IndexPlan",
    "IndexSpec",
    "InvalidIndexSpec",
    "KINDS",
    "StaleIndex",
    "build_index",
    "clustered_vectors",
    "ensure_index",
    "feature_vector_blocks",
    "feature_vectors",
    "gpu_available",
    "index_dir",
    "l2_normalise",
    "open_index",
    "pool_video_vectors",
    "saved_spec",
    "search_param_candidates",
    "set_search_param",
    "update_index",
]

logger = logging.getLogger(__name__)
INDEX_DIRNAME = "index"


def index_dir(fset: FeatureSet) -> Path:
    """Where a feature set's index lives: ``<store>/features/<set>/index``."""
    return Path(fset.path) / INDEX_DIRNAME


def feature_vectors(
    fset: FeatureSet,
    *,
    level: str = "video",
    metric: str = "ip",
    rows: np.ndarray | None = None,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The vectors an index over ``fset`` holds, for building in-memory indexes (e.g. per fold).

    Args:
        fset: A ``store.FeatureSet``.
        level: ``video`` (mean of valid clips) or ``clip`` (each valid clip).
        metric: ``ip`` (L2-normalised) or ``l2`` (raw).
        rows: Only these rows (default all); rows not done or without a valid clip are skipped.
        progress: Wraps the chunk iterator, e.g. ``tqdm``.

    Returns:
        ``(vectors (n, D) float32, rows (n,) int64, clips (n,) int32 or None)``.
    """
    vectors, vrows, clips, _ = read_vectors(fset, level, metric, rows=rows, progress=progress)
    return vectors, vrows, clips


def feature_vector_blocks(
    fset: FeatureSet,
    *,
    block_rows: int,
    metric: str = "ip",
    rows: np.ndarray | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per-video vectors (as :func:`feature_vectors` makes them) in blocks, from one pass over the set.

    Memory is one block, and ``done`` / ``valid`` are read once, not once per block.

    Args:
        fset: A ``store.FeatureSet``.
        block_rows: Vectors per block (whole storage chunks: a block may exceed it by one chunk).
        metric: ``ip`` (L2-normalised) or ``l2`` (raw).
        rows: Only these rows (default all); rows not done or without a valid clip are skipped.
        progress: Wraps the chunk iterator, e.g. ``tqdm``.

    Yields:
        ``(vectors (b, D) float32, rows (b,) int64)`` in row order.
    """
    vectors: list[np.ndarray] = []
    vrows: list[np.ndarray] = []
    held = 0
    for v, r, _, _ in iter_vector_chunks(fset, "video", metric, rows=rows, progress=progress):
        vectors.append(v)
        vrows.append(r)
        held += len(r)
        if held >= block_rows:
            yield np.concatenate(vectors), np.concatenate(vrows)
            vectors, vrows, held = [], [], 0
    if held:
        yield np.concatenate(vectors), np.concatenate(vrows)


def _identity(fset: FeatureSet) -> dict[str, Any]:
    """What the index records about its feature set, to detect a changed set later."""
    return {
        "name": fset.name,
        "fingerprint": fset.spec.fingerprint(),
        "provenance": fset.spec.provenance(),
        "created": fset.attrs.get("created"),
    }


def _save(index: FeatureIndex, fset: FeatureSet) -> None:
    if fset.store.mode == "r":
        logger.warning(
            "store %s is open read-only: the index of %r is kept in memory, not saved; open the"
            " store with mode='a' to save it",
            fset.store.path,
            fset.name,
        )
        return
    index.save(index_dir(fset))


def build_index(
    fset: FeatureSet, spec: IndexSpec | None = None, *, progress: Progress | None = None
) -> FeatureIndex:
    """Build (or rebuild) the index of a feature set over its done rows and save it.

    Args:
        fset: A ``store.FeatureSet``.
        spec: Index settings; default ``IndexSpec()`` (auto kind, video level, cosine).
        progress: Wraps the chunk reader and the add blocks (e.g. ``tqdm``) to show progress.

    Raises:
        InvalidIndexSpec: no row is extracted yet, or the spec cannot be met.
    """
    spec = spec or IndexSpec()
    t0 = time.perf_counter()
    vectors, rows, clips, empty = read_vectors(fset, spec.level, spec.metric, progress=progress)
    if len(vectors) == 0:
        raise InvalidIndexSpec(
            f"feature set {fset.name!r} has no extracted rows with a valid clip to index;"
            " extract features first"
        )
    index = FeatureIndex.from_vectors(vectors, rows, spec, clips=clips, progress=progress)
    index.meta.update(
        feature_set=_identity(fset),
        excluded_rows=empty.tolist(),
        build_seconds=round(time.perf_counter() - t0, 3),
    )
    _save(index, fset)
    logger.info("index of %r: %s", fset.name, index.describe())
    return index


def _store_hint(fset: FeatureSet) -> str:
    return (
        f"rebuild it: `python -m store.search --store {fset.store.path} --features {fset.name} --rebuild ...`"
        " or store.index.build_index(fset, spec)"
    )


def open_index(fset: FeatureSet, *, gpu: bool | None = None) -> FeatureIndex:
    """Load the saved index of a feature set, refusing it if the feature set changed.

    Rows extracted after the build are not in it: :func:`update_index` adds them.

    Args:
        fset: A ``store.FeatureSet``.
        gpu: Override the saved ``IndexSpec.gpu`` (search on GPU 0 when available).

    Raises:
        IndexNotFound: no index was built.
        StaleIndex: the feature set's provenance fingerprint changed, or indexed rows are no
            longer marked done (the set was reset or re-created).
    """
    directory = index_dir(fset)
    if not (directory / "meta.json").is_file():
        raise IndexNotFound(
            f"feature set {fset.name!r} has no index yet; build it with `python -m store.search"
            f" --store {fset.store.path} --features {fset.name} ...` or store.index.build_index(fset)"
        )
    meta = read_meta(directory)
    built = meta.get("feature_set", {})
    now = _identity(fset)
    if built.get("fingerprint") != now["fingerprint"]:
        old, new = built.get("provenance", {}), now["provenance"]
        changed = (
            ", ".join(
                f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            )
            or "unknown fields"
        )
        raise StaleIndex(
            f"the index of feature set {fset.name!r} was built from different features ({changed});"
            f" {_store_hint(fset)}"
        )
    if built.get("created") != now["created"]:
        raise StaleIndex(
            f"the index of feature set {fset.name!r} was built for the set created at"
            f" {built.get('created')}, but the set was re-created at {now['created']}; {_store_hint(fset)}"
        )
    rows = np.load(directory / "rows.npy", mmap_mode="r")
    rows = np.asarray(rows[:, 0] if rows.ndim == 2 else rows)
    done = fset.done()
    lost = rows[(rows >= len(done)) | ~done[np.minimum(rows, len(done) - 1)]] if len(done) else rows
    if len(lost):
        raise StaleIndex(
            f"the index of feature set {fset.name!r} holds {len(np.unique(lost))} row(s) that are no"
            f" longer extracted (e.g. row {int(lost[0])}); the set was reset or re-created:"
            f" {_store_hint(fset)}"
        )
    return FeatureIndex.load(directory, gpu=gpu)


def update_index(
    fset: FeatureSet, *, index: FeatureIndex | None = None, progress: Progress | None = None
) -> FeatureIndex:
    """Add the rows extracted since the index was built (or last updated) and save it.

    IVF indexes keep their trained quantizer: the result equals adding every row to the
    index as first trained. A saved ``auto`` index that has grown past its kind's range
    logs a warning suggesting a rebuild.

    Args:
        fset: A ``store.FeatureSet``.
        index: The already opened index of ``fset`` (default: :func:`open_index`).
        progress: Wraps the chunk reader, e.g. ``tqdm``.
    """
    index = index or open_index(fset)
    known = np.zeros(fset.n_rows, dtype=bool)
    known[index.rows] = True
    known[np.asarray(index.meta.get("excluded_rows", []), dtype=np.int64)] = True
    new_rows = np.flatnonzero(fset.done() & ~known)
    if len(new_rows) == 0:
        return index
    vectors, rows, clips, empty = read_vectors(
        fset, index.spec.level, index.spec.metric, rows=new_rows, progress=progress
    )
    index.add(vectors, rows, clips)
    index.meta["excluded_rows"] = sorted(
        set(index.meta.get("excluded_rows", [])) | set(empty.tolist())
    )
    index.meta["updated_at"] = utc_now()
    logger.info(
        "added %d new row(s) to the index of %r (%d vectors)",
        len(new_rows),
        fset.name,
        index.n_vectors,
    )
    if index.spec.kind == "auto":
        try:
            wanted = plan_index(index.spec, index.n_vectors, index.dim).kind
        except ValueError:
            wanted = "ivf_pq"
        if wanted != index.plan.kind:
            logger.warning(
                "the index of %r has grown to %d vectors, where auto would choose %s over %s: %s",
                fset.name,
                index.n_vectors,
                wanted,
                index.plan.kind,
                _store_hint(fset),
            )
    _save(index, fset)
    return index


def ensure_index(
    fset: FeatureSet,
    spec: IndexSpec | None = None,
    *,
    rebuild: bool = False,
    progress: Progress | None = None,
    gpu: bool | None = None,
) -> FeatureIndex:
    """The up-to-date index of a feature set: built if missing, else opened and updated.

    Args:
        fset: A ``store.FeatureSet``.
        spec: Wanted settings. None: the saved index's, or ``IndexSpec()`` for a new one. A
            saved index built with other settings is rebuilt.
        rebuild: Build afresh even if an index exists (the way out of :class:`StaleIndex`).
        progress: Wraps the chunk reader, e.g. ``tqdm``.
        gpu: Override ``spec.gpu`` of a loaded index.

    Raises:
        StaleIndex: the saved index no longer matches the feature set and ``rebuild`` is False.
    """
    directory = index_dir(fset)
    if rebuild or not (directory / "meta.json").is_file():
        spec = spec or saved_spec(fset) or IndexSpec()
        return build_index(
            fset, spec if gpu is None else dataclasses.replace(spec, gpu=gpu), progress=progress
        )
    index = open_index(fset, gpu=gpu)
    if spec is not None and dataclasses.replace(spec, gpu=index.spec.gpu) != index.spec:
        logger.info(
            "rebuilding the index of %r: requested %s, saved %s", fset.name, spec, index.spec
        )
        return build_index(fset, spec, progress=progress)
    return update_index(fset, index=index, progress=progress)


def saved_spec(fset: FeatureSet) -> IndexSpec | None:
    """The settings of the feature set's saved index, or None if it has none."""
    directory = index_dir(fset)
    return (
        IndexSpec.from_dict(read_meta(directory)["spec"])
        if (directory / "meta.json").is_file()
        else None
    )
