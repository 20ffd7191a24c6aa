"""``FeatureIndex``: a faiss index plus the store rows (and clips) of its vectors.

Search, incremental add and crash-safe save/load. Re-exported by ``store.index``, which
adds the feature-set side (reading vectors, staleness, update).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from store._coarse_kmeans import train_ivf
from store._durable import fsync_dir
from store._index_factory import (
    IVF_KINDS,
    MAX_GPU_K,
    SEARCH_PARAM,
    IndexPlan,
    estimate_mb,
    make_index,
    plan_index,
    set_search_param,
    to_device,
    train_sample_size,
    tune_search_param,
)
from store._index_spec import IndexSpec, InvalidIndexSpec
from store._index_vectors import Progress, is_unit_norm, l2_normalise
from store.errors import ShapeMismatch
from store.schema import code_version

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1
ADD_BLOCK = 65_536  # vectors per faiss add() call: paces progress and bounds faiss's temporaries


def read_meta(directory: Path) -> dict[str, Any]:
    """The ``meta.json`` of an index directory."""
    return json.loads((Path(directory) / "meta.json").read_text())


class FeatureIndex:
    """A faiss index plus the store rows (and clips) its vectors come from.

    Build one with :func:`build_index` / :meth:`from_vectors`, load one with
    :func:`open_index` / :meth:`load`. The CPU index is the master copy (it is what is saved
    and what :meth:`add` grows); searches run on a GPU clone when one is in use.
    """

    def __init__(
        self,
        cpu_index: faiss.Index,
        spec: IndexSpec,
        plan: IndexPlan,
        rows: np.ndarray,
        clips: np.ndarray | None,
        meta: dict[str, Any],
    ) -> None:
        assert cpu_index.ntotal == len(rows), "one row per indexed vector"
        self.spec, self.plan, self.meta = spec, plan, meta
        self.rows = np.asarray(rows, dtype=np.int64)
        self.clips = None if clips is None else np.asarray(clips, dtype=np.int32)
        self._cpu = cpu_index
        self._place()

    def _place(self) -> None:
        self._index, self._gpu_resources = to_device(self._cpu, self.plan.kind, self.spec.gpu)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        rows: np.ndarray,
        spec: IndexSpec | None = None,
        clips: np.ndarray | None = None,
        *,
        progress: Progress | None = None,
    ) -> FeatureIndex:
        """Train, fill and tune an in-memory index (not saved).

        IVF quantizers are trained on a seeded sample of :func:`train_sample_size` vectors
        (two-level k-means from 1024 lists on: ``store._coarse_kmeans``); all vectors are then
        added in blocks of :data:`ADD_BLOCK`.

        Args:
            vectors: ``(n, D)`` vectors; normalised here for the ``ip`` metric.
            rows: ``(n,)`` store row of each vector (what searches return).
            spec: Index settings (default ``IndexSpec()``).
            clips: ``(n,)`` clip slot of each vector, for clip-level indexes.
            progress: Wraps the add blocks, e.g. ``tqdm``.
        """
        spec = spec or IndexSpec()
        t0 = time.perf_counter()
        x = _as_vectors(vectors, spec.metric)
        n, dim = x.shape
        if n == 0:
            raise InvalidIndexSpec("no vectors to index: extract some rows first")
        try:
            plan = plan_index(spec, n, dim)
        except ValueError as exc:
            raise InvalidIndexSpec(str(exc)) from None
        if plan.kind == "ivf_pq" and dim % plan.m:
            raise InvalidIndexSpec(f"IVF-PQ needs m dividing the dimension {dim}; got m={plan.m}")
        if n < plan.min_train_vectors():
            raise InvalidIndexSpec(
                f"{plan.factory_string()} needs at least {plan.min_train_vectors()} vectors to train, the set has"
                f" {n}; use kind='flat' (or 'auto') or a smaller nlist"
            )
        index = make_index(plan, spec.seed)
        n_train = train_sample_size(plan, n)
        t_train = time.perf_counter()
        if plan.kind in IVF_KINDS:
            pick = np.random.default_rng(spec.seed).choice(n, size=n_train, replace=False)
            train_ivf(index, x if n_train == n else x[np.sort(pick)], seed=spec.seed)
        else:
            index.train(x)
        logger.info("trained %s on %d of %d vectors in %.1f s", plan.factory_string(), n_train, n,
                    time.perf_counter() - t_train)
        blocks = range(0, n, ADD_BLOCK)
        for start in progress(blocks, desc="adding", unit="block") if progress is not None else blocks:
            index.add(x[start:start + ADD_BLOCK])
        value, recall, n_queries = tune_search_param(
            index,
            plan,
            x,
            k=spec.recall_k,
            target=spec.recall_target,
            n_queries=spec.tune_queries,
            seed=spec.seed,
        )
        meta = {
            "format": FORMAT_VERSION,
            "factory": plan.factory_string(),
            "search_param": None
            if value is None
            else {"name": SEARCH_PARAM[plan.kind], "value": value},
            "recall": {
                "k": spec.recall_k,
                "value": recall,
                "target": spec.recall_target,
                "met": recall >= spec.recall_target,
                "n_queries": n_queries,
                "n_vectors": n,
            },
            "train_vectors": n_train,
            "estimated_mb": round(estimate_mb(plan, n), 1),
            "build_seconds": round(time.perf_counter() - t0, 3),
            "built_at": utc_now(),
            "faiss_version": faiss.__version__,
            "code_version": code_version(),
        }
        logger.info(
            "built %s over %d %s vectors: %s", plan.factory_string(), n, spec.level, meta["recall"]
        )
        return cls(index, spec, plan, rows, clips, meta)

    def add(self, vectors: np.ndarray, rows: np.ndarray, clips: np.ndarray | None = None) -> None:
        """Append vectors (IVF: to the already trained lists; no retraining)."""
        x = _as_vectors(vectors, self.spec.metric)
        if x.shape[1] != self.dim:
            raise ShapeMismatch(
                f"vectors of dim {x.shape[1]} cannot join an index of dim {self.dim}"
            )
        if len(rows) != len(x) or (self.clips is not None) != (clips is not None):
            raise ShapeMismatch(
                "add() needs one row per vector (and one clip per vector for clip-level indexes)"
            )
        self._cpu.add(x)
        self.rows = np.concatenate([self.rows, np.asarray(rows, dtype=np.int64)])
        if self.clips is not None:
            self.clips = np.concatenate([self.clips, np.asarray(clips, dtype=np.int32)])
        self._place()  # a fresh GPU clone of the grown CPU index

    # ------------------------------------------------------------------ searching
    @property
    def n_vectors(self) -> int:
        return int(self._cpu.ntotal)

    @property
    def dim(self) -> int:
        return int(self._cpu.d)

    @property
    def on_gpu(self) -> bool:
        return self._gpu_resources is not None

    def describe(self) -> str:
        """One line: factory, size, tuned parameter, recall, device."""
        p, r = self.meta.get("search_param"), self.meta["recall"]
        param = f", {p['name']}={p['value']}" if p else ""
        return (
            f"{self.meta['factory']} over {self.n_vectors} {self.spec.level} vectors{param}, recall@{r['k']}"
            f" {r['value']:.3f} (target {r['target']:.2f}) on {'GPU' if self.on_gpu else 'CPU'}"
        )

    def locality_order(self, vectors: np.ndarray) -> np.ndarray:
        """An order of the query ``vectors`` that puts queries falling in the same IVF list side by side.

        IVF-Flat scans are bound by memory traffic (each probed list is read from RAM for every
        query); searching a large batch in this order reads a list once for a run of queries
        from cache instead (1.5x fewer CPU seconds measured for 60k queries over 2,800 lists,
        including the extra coarse assignment this costs). Identity for other kinds.

        Returns:
            ``(q,)`` int64 positions into ``vectors``.
        """
        if self.plan.kind not in IVF_KINDS:
            return np.arange(len(vectors))
        q = _as_vectors(vectors, self.spec.metric)
        _, lists = faiss.extract_index_ivf(self._cpu).quantizer.search(q, 1)  # (q, 1) nearest list
        return np.argsort(lists[:, 0], kind="stable")

    def search_positions(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw faiss hits: ``(sims (q, k), positions (q, k))``; position -1 pads missing hits.

        Positions index :attr:`rows` and :attr:`clips`. Similarity is cosine for ``ip``
        and minus the squared distance for ``l2``; padding has similarity ``-inf``.
        """
        return self._search(_as_vectors(vectors, self.spec.metric), k)

    def _search(
        self, q: np.ndarray, k: int, params: faiss.SearchParameters | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search_positions` on prepared (float32, normalised) queries.

        ``params`` (an ID selector from :meth:`_selector_params`) searches the CPU index:
        faiss's GPU indexes do not take selectors.
        """
        if q.shape[1] != self.dim:
            raise ShapeMismatch(
                f"query vectors have dim {q.shape[1]}, the index expects {self.dim}"
            )
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        gpu = self.on_gpu and params is None
        k = min(k, self.n_vectors, MAX_GPU_K if gpu else self.n_vectors)
        if params is None:
            dist, pos = self._index.search(q, k)
        else:
            dist, pos = self._cpu.search(q, k, params=params)
        sims = -dist if self.spec.metric == "l2" else dist
        sims[pos < 0] = -np.inf
        return sims, pos

    def _selector_params(self, allowed: np.ndarray) -> faiss.SearchParameters:
        """Search parameters whose ID selector admits only the ``allowed`` positions, with
        the index's tuned ``nprobe`` / ``efSearch`` (faiss would otherwise reset them)."""
        mask = np.asarray(allowed, dtype=bool)
        if mask.shape != (self.n_vectors,):
            raise ShapeMismatch(f"allowed must have one entry per indexed vector ({self.n_vectors}), got {mask.shape}")
        bitmap = np.packbits(mask, bitorder="little")  # bit i of byte i // 8 is position i
        sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bitmap))
        if self.plan.kind in IVF_KINDS:
            params = faiss.SearchParametersIVF(sel=sel, nprobe=faiss.extract_index_ivf(self._cpu).nprobe)
        elif self.plan.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=sel, efSearch=self._cpu.hnsw.efSearch)
        else:
            params = faiss.SearchParameters(sel=sel)
        params.keep_alive = (sel, bitmap)  # faiss holds raw pointers to both
        return params

    def search(
        self,
        vectors: np.ndarray,
        k: int = 10,
        *,
        exclude_rows: np.ndarray | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar videos (store rows) for each query vector.

        At clip level a video counts once, with the similarity of its closest clip.

        Args:
            vectors: ``(q, D)`` query vectors (normalised here for ``ip``).
            k: Neighbours per query.
            exclude_rows: ``(q,)`` one store row per query to leave out (the query video
                itself when querying by row); -1 excludes nothing.
            allowed: ``(n_vectors,)`` bool, the indexed vectors that may be hits for every
                query (e.g. all but one fold's); a faiss ID selector applies it inside the
                search, on the CPU index, so one trained index serves every subset.

        Returns:
            ``(sims (q, k) float32, rows (q, k) int64)`` best first; when fewer than ``k``
            videos qualify, rows are -1 and sims ``-inf``.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        q = _as_vectors(vectors, self.spec.metric)
        n_q = len(q)
        exclude = (
            np.full(n_q, -1, np.int64)
            if exclude_rows is None
            else np.asarray(exclude_rows, np.int64)
        )
        if exclude.shape != (n_q,):
            raise ShapeMismatch(
                f"exclude_rows must have one row per query ({n_q}), got shape {exclude.shape}"
            )
        out_sims = np.full((n_q, k), -np.inf, np.float32)
        out_rows = np.full((n_q, k), -1, np.int64)
        # Video level: one extra hit covers the excluded row. Clip level: a video may fill up
        # to K hits (K = clips per video), so fetch (k + 1) K; fetch 4x more for queries still
        # short, unless the index already ran out of hits for them (-1 padding: IVF lists
        # probed hold no more vectors, or everything was returned).
        per_video = 1 if self.clips is None or not len(self.clips) else int(self.clips.max()) + 1
        fetch = (k + 1) * per_video
        limit = min(self.n_vectors, MAX_GPU_K if self.on_gpu else self.n_vectors)
        params = None if allowed is None else self._selector_params(allowed)
        if params is not None:
            limit = min(self.n_vectors, int(np.count_nonzero(allowed)))
            if limit == 0:
                return out_sims, out_rows
        todo = np.arange(n_q)
        while len(todo):
            sims, pos = self._search(q[todo], min(fetch, limit), params)
            out_sims[todo], out_rows[todo], complete = _first_k_distinct(
                sims, pos, self.rows, exclude[todo], k
            )
            exhausted = (pos < 0).any(axis=1) | (fetch >= limit)
            todo = todo[~(complete | exhausted)]
            fetch *= 4
        return out_sims, out_rows

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        """Write ``faiss.index``, ``rows.npy`` and ``meta.json``: into a temporary sibling
        directory first, then swapped in by rename, so a crash never leaves half an index."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            tmp.chmod(directory.parent.stat().st_mode & 0o777)  # mkdtemp makes it owner-only
            faiss.write_index(self._cpu, str(tmp / "faiss.index"))
            rows = (
                self.rows
                if self.clips is None
                else np.stack([self.rows, self.clips.astype(np.int64)], axis=1)
            )
            np.save(tmp / "rows.npy", rows)
            meta = {
                **self.meta,
                "spec": self.spec.to_dict(),
                "plan": self.plan.to_dict(),
                "n_vectors": self.n_vectors,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            for f in tmp.iterdir():
                fsync_dir(f)
            fsync_dir(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex}")
        if directory.exists():
            os.rename(directory, old)
        os.rename(tmp, directory)
        fsync_dir(directory.parent)
        shutil.rmtree(old, ignore_errors=True)
        for leftover in directory.parent.glob(f".{directory.name}.old-*"):  # from a crash mid-swap
            shutil.rmtree(leftover, ignore_errors=True)

    @classmethod
    def load(cls, directory: str | Path, *, gpu: bool | None = None) -> FeatureIndex:
        """Read an index written by :meth:`save` (no staleness check: see :func:`open_index`).

        Args:
            directory: The index directory.
            gpu: Override the saved ``spec.gpu``.
        """
        directory = Path(directory)
        meta = read_meta(directory)
        spec = IndexSpec.from_dict(meta["spec"])
        if gpu is not None:
            spec = dataclasses.replace(spec, gpu=gpu)
        plan = IndexPlan.from_dict(meta["plan"])
        rows = np.load(directory / "rows.npy")
        index = faiss.read_index(str(directory / "faiss.index"))
        if meta.get("search_param"):
            set_search_param(
                index, plan.kind, meta["search_param"]["value"]
            )  # before any GPU clone
        clips = rows[:, 1] if rows.ndim == 2 else None
        return cls(index, spec, plan, rows[:, 0] if rows.ndim == 2 else rows, clips, meta)


def _first_k_distinct(
    sims: np.ndarray, pos: np.ndarray, vector_rows: np.ndarray, exclude: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query, the first ``k`` hits with a distinct row that is not excluded.

    Returns ``(sims (q, k), rows (q, k), complete (q,))``; complete is False where fewer than
    ``k`` hits qualified (padding: row -1, sim -inf).
    """
    rows = np.where(pos >= 0, vector_rows[np.maximum(pos, 0)], -1)  # (q, f)
    order = np.argsort(rows, axis=1, kind="stable")  # same rows side by side, best first
    sorted_rows = np.take_along_axis(rows, order, axis=1)
    repeat_sorted = np.zeros_like(sorted_rows, dtype=bool)
    repeat_sorted[:, 1:] = sorted_rows[:, 1:] == sorted_rows[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    drop = repeat | (rows < 0) | (rows == exclude[:, None])  # (q, f)
    keep = np.argsort(drop, axis=1, kind="stable")[:, :k]  # kept hits first, in rank order
    n_q, f = rows.shape
    out_rows = np.full((n_q, k), -1, np.int64)
    out_sims = np.full((n_q, k), -np.inf, np.float32)
    width = min(k, f)
    kept = ~np.take_along_axis(drop, keep, axis=1)[:, :width]
    out_rows[:, :width] = np.where(kept, np.take_along_axis(rows, keep, axis=1)[:, :width], -1)
    out_sims[:, :width] = np.where(kept, np.take_along_axis(sims, keep, axis=1)[:, :width], -np.inf)
    return out_sims, out_rows, (~drop).sum(axis=1) >= k


def _as_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    """``vectors`` as float32, C-contiguous, 2-D and (for ``ip``) L2-normalised.

    Vectors already in that form (as :func:`store.index.feature_vectors` returns them) are
    used as they are, so a large set is not held twice; anything else is copied.
    """
    x = np.asarray(vectors)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ShapeMismatch(f"vectors must be 2-D (n, D), got shape {np.shape(vectors)}")
    if x.dtype == np.float32 and x.flags.c_contiguous and (metric != "ip" or is_unit_norm(x)):
        return x
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    return l2_normalise(x) if metric == "ip" else x


def utc_now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")
