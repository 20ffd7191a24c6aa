"""How ``store.index`` chooses, makes, tunes and places a faiss index.

* :func:`plan_index` resolves ``kind="auto"`` (and unset sizes) into an :class:`IndexPlan`
  from the number of vectors, their dimension and the memory budget (rule and measurements
  in ``store/README.md``, "Choosing the index").
* :func:`make_index` turns a plan into an untrained CPU faiss index.
* :func:`tune_search_param` raises ``nprobe`` / ``efSearch`` until recall@k against exact
  search reaches the target on a sample of the indexed vectors.
* :func:`to_device` moves a CPU index to GPU 0 when faiss sees a GPU (not HNSW).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from store._index_spec import IndexSpec

logger = logging.getLogger(__name__)

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
# PQ code sizes (bytes) that GpuIndexIVFPQ supports without float16 lookup tables.
GPU_PQ_BYTES = (1, 2, 3, 4, 8, 12, 16, 20, 24, 28, 32, 40, 48)
IVF_KINDS = ("ivf_flat", "ivf_fp16", "ivf_sq8", "ivf_pq")
SEARCH_PARAM = {**dict.fromkeys(IVF_KINDS, "nprobe"), "hnsw": "efSearch"}
MAX_GPU_K = 2048  # faiss GPU k-selection limit: largest k and nprobe on a GPU index
MAX_EF_SEARCH = 4096
MIN_POINTS_PER_CENTROID = 39  # faiss ClusteringParameters: fewer and k-means warns
MAX_POINTS_PER_CENTROID = 256  # faiss ClusteringParameters: more are subsampled away anyway
TRAIN_CAP = 100_000  # training vectors beyond the minimum per centroid (bounds k-means time)
PLATEAU = 0.002  # tuning stops when doubling nprobe / efSearch gains less recall than this
_MB = 2**20


@dataclass(frozen=True)
class IndexPlan:
    """A resolved index choice: what ``faiss.index_factory`` builds.

    Attributes:
        kind: ``flat``, ``ivf_flat``, ``ivf_fp16``, ``ivf_sq8``, ``ivf_pq`` or ``hnsw`` (never ``auto``).
        dim: Vector dimension.
        metric: ``ip`` or ``l2``.
        nlist: IVF inverted lists (IVF kinds only).
        m: PQ sub-quantizers, i.e. code bytes per vector at 8 bits (``ivf_pq`` only).
        nbits: Bits per PQ sub-quantizer code (``ivf_pq`` only).
        hnsw_m: Graph degree M (``hnsw`` only).
        ef_construction: HNSW build-time beam width (``hnsw`` only).
    """

    kind: str
    dim: int
    metric: str = "ip"
    nlist: int | None = None
    m: int | None = None
    nbits: int = 8
    hnsw_m: int | None = None
    ef_construction: int | None = None

    def factory_string(self) -> str:
        """The ``faiss.index_factory`` description, e.g. ``IVF1024,Flat``."""
        if self.kind == "flat":
            return "Flat"
        if self.kind == "ivf_flat":
            return f"IVF{self.nlist},Flat"
        if self.kind == "ivf_fp16":
            return f"IVF{self.nlist},SQfp16"
        if self.kind == "ivf_sq8":
            return f"IVF{self.nlist},SQ8"
        if self.kind == "ivf_pq":
            return f"IVF{self.nlist},PQ{self.m}x{self.nbits}np"  # np: no polysemous training (slow)
        return f"HNSW{self.hnsw_m},Flat"

    def min_train_vectors(self) -> int:
        """Fewest vectors the plan can be trained on (k-means needs a point per centroid)."""
        if self.kind in ("ivf_flat", "ivf_fp16", "ivf_sq8"):
            return self.nlist
        if self.kind == "ivf_pq":
            return max(self.nlist, 2**self.nbits)
        return 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexPlan:
        return cls(**d)


def default_nlist(n: int) -> int:
    """``4 sqrt(n)`` inverted lists (the low end of faiss's "4 sqrt(n) to 16 sqrt(n)"
    guideline, whose k-means and list assignment are the cheapest), at most one per
    :data:`MIN_POINTS_PER_CENTROID` vectors."""
    return max(1, min(round(4 * math.sqrt(n)), n // MIN_POINTS_PER_CENTROID))


def train_sample_size(plan: IndexPlan, n: int) -> int:
    """How many of ``n`` vectors train the plan's coarse quantizer (k-means).

    faiss's rule: at least :data:`MIN_POINTS_PER_CENTROID` and at most
    :data:`MAX_POINTS_PER_CENTROID` training points per inverted list (its guideline: 30 to
    256 x nlist); within that, at most :data:`TRAIN_CAP` so k-means time stays bounded
    whatever ``n`` is. Non-IVF plans train on nothing (flat, HNSW) and return ``n``.
    """
    if plan.kind not in IVF_KINDS:
        return n
    want = min(MAX_POINTS_PER_CENTROID * plan.nlist, max(MIN_POINTS_PER_CENTROID * plan.nlist, TRAIN_CAP))
    if plan.kind == "ivf_pq":
        want = max(want, MIN_POINTS_PER_CENTROID * 2**plan.nbits)  # the PQ codebooks' k-means too
    return min(n, want)


def estimate_mb(plan: IndexPlan, n: int) -> float:
    """Approximate resident size of the index holding ``n`` vectors, in MiB."""
    d = plan.dim
    if plan.kind == "flat":
        size = n * d * 4
    elif plan.kind == "ivf_flat":
        size = n * (d * 4 + 8) + plan.nlist * d * 4
    elif plan.kind == "ivf_fp16":
        size = n * (d * 2 + 8) + plan.nlist * d * 4
    elif plan.kind == "ivf_sq8":
        size = n * (d + 8) + plan.nlist * d * 4
    elif plan.kind == "ivf_pq":
        size = n * (plan.m * plan.nbits / 8 + 8) + plan.nlist * d * 4 + 2**plan.nbits * d * 4
    else:  # hnsw: raw vectors + 2M int32 links on level 0 (+ ~1/M more on upper levels)
        size = n * (d * 4 + plan.hnsw_m * 2 * 4 * (1 + 1 / plan.hnsw_m))
    return size / _MB


def plan_index(spec: IndexSpec, n: int, dim: int) -> IndexPlan:
    """Resolve an ``IndexSpec`` (kind, sizes, memory budget) for ``n`` vectors of ``dim``.

    Auto rule: ``flat`` below ``spec.flat_max_vectors`` vectors when it fits the budget;
    else ``ivf_fp16`` (float16 codes: half the memory traffic of ``ivf_flat`` at almost
    the same recall) with ``nlist = 4 sqrt(n)`` when those fit; else ``ivf_sq8`` (8-bit
    scalar codes, 4x smaller than float32) when those fit; else ``ivf_pq`` with the largest
    GPU-compatible code size that fits. Raises ``ValueError`` when even
    that does not fit (the caller turns it into a user-facing error).
    """
    nlist = spec.nlist or default_nlist(n)
    common = {"dim": dim, "metric": spec.metric}
    if spec.kind == "flat":
        return IndexPlan("flat", **common)
    if spec.kind in ("ivf_flat", "ivf_fp16", "ivf_sq8"):
        return IndexPlan(spec.kind, nlist=nlist, **common)
    if spec.kind == "hnsw":
        return IndexPlan("hnsw", hnsw_m=spec.hnsw_m, ef_construction=spec.ef_construction, **common)
    if spec.kind == "ivf_pq":
        return IndexPlan(
            "ivf_pq",
            nlist=nlist,
            m=spec.m or _pick_pq_m(dim, n, nlist, spec),
            nbits=spec.nbits,
            **common,
        )
    # auto
    flat = IndexPlan("flat", **common)
    if n < spec.flat_max_vectors and estimate_mb(flat, n) <= spec.memory_budget_mb:
        return flat
    for kind in ("ivf_fp16", "ivf_sq8"):
        ivf = IndexPlan(kind, nlist=nlist, **common)
        if estimate_mb(ivf, n) <= spec.memory_budget_mb:
            return ivf
    return IndexPlan(
        "ivf_pq",
        nlist=nlist,
        m=spec.m or _pick_pq_m(dim, n, nlist, spec),
        nbits=spec.nbits,
        **common,
    )


def _pick_pq_m(dim: int, n: int, nlist: int, spec: IndexSpec) -> int:
    """Largest GPU-compatible PQ code size (at most ``dim / 2`` sub-quantizers) in budget."""
    candidates = [m for m in GPU_PQ_BYTES if dim % m == 0 and m <= max(1, dim // 2)]
    for m in reversed(candidates):
        plan = IndexPlan("ivf_pq", dim=dim, nlist=nlist, m=m, nbits=spec.nbits)
        if estimate_mb(plan, n) <= spec.memory_budget_mb:
            return m
    smallest = IndexPlan("ivf_pq", dim=dim, nlist=nlist, m=candidates[0], nbits=spec.nbits)
    raise ValueError(
        f"{n} vectors of dim {dim} need at least {estimate_mb(smallest, n):.0f} MiB even as IVF-PQ"
        f" codes; raise memory_budget_mb (now {spec.memory_budget_mb:g})"
    )


def make_index(plan: IndexPlan, seed: int = 0) -> faiss.Index:
    """An empty CPU index for ``plan``; IVF k-means (and PQ training) seeded by ``seed``."""
    index = faiss.index_factory(plan.dim, plan.factory_string(), METRICS[plan.metric])
    if plan.kind in IVF_KINDS:
        ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
        ivf.cp.seed = seed
        if plan.kind == "ivf_pq":
            ivf.pq.cp.seed = seed
    elif plan.kind == "hnsw":
        index.hnsw.efConstruction = plan.ef_construction
    return index


def set_search_param(index: faiss.Index, kind: str, value: int | None) -> None:
    """Set ``nprobe`` (IVF) or ``efSearch`` (HNSW) on a CPU index; no-op for flat."""
    if kind in SEARCH_PARAM and value is not None:
        faiss.ParameterSpace().set_index_parameter(index, SEARCH_PARAM[kind], int(value))


def search_param_candidates(plan: IndexPlan, k: int) -> list[int]:
    """Increasing values to try: powers of two up to ``nlist`` (and the GPU limit), or efSearch."""
    if plan.kind in IVF_KINDS:
        top = min(plan.nlist, MAX_GPU_K)
        values = [2**i for i in range(int(math.log2(top)) + 1)]
        return values if values[-1] == top else values + [top]
    if plan.kind == "hnsw":
        values, ef = [], max(16, k)
        while ef < MAX_EF_SEARCH:
            values.append(ef)
            ef *= 2
        return values + [MAX_EF_SEARCH]
    return []


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of ``|found_q & truth_q| / |truth_q|`` (ids ``-1`` are padding)."""
    hits = total = 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        hits += np.intersect1d(f[f >= 0], t).size
        total += t.size
    return hits / total if total else 1.0


def _knn_excluding_self(
    index: faiss.Index, queries: np.ndarray, self_ids: np.ndarray, k: int
) -> np.ndarray:
    """Top-k ids of each query, its own id removed (it is in the index)."""
    _, ids = index.search(queries, k + 1)
    return _drop_self(ids, self_ids, k)


def _drop_self(ids: np.ndarray, self_ids: np.ndarray, k: int) -> np.ndarray:
    """``(q, k + 1)`` hits -> ``(q, k)``: each query's own id removed (else its last hit)."""
    keep = ids != self_ids[:, None]  # (q, k+1)
    keep[keep.all(axis=1), -1] = False  # self not found: drop the last instead
    return ids[keep].reshape(len(ids), k)  # (q, k+1) -> (q, k)


def tune_search_param(
    index: faiss.Index,
    plan: IndexPlan,
    vectors: np.ndarray,
    *,
    k: int,
    target: float,
    n_queries: int,
    seed: int,
) -> tuple[int | None, float, int]:
    """Smallest ``nprobe`` / ``efSearch`` reaching recall@k >= target; sets it on ``index``.

    Values double from 1 (IVF) or max(16, k) (HNSW). A seeded sample of the indexed vectors
    is held out as queries: each query's own entry is removed from both the exact
    (brute-force) and the approximate top-k, as in a query by id. If recall stops improving
    (or the values run out) below the target, the best value is kept and a warning logged.

    Returns:
        ``(value, recall, n_queries)``; value is None for flat (recall 1 by construction).
    """
    n = index.ntotal
    if plan.kind == "flat" or n <= 1:
        return None, 1.0, 0
    k = min(k, n - 1)
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(n_queries, n), replace=False))
    queries = vectors[sample]
    _, ids = faiss.knn(queries, vectors, k + 1, metric=METRICS[plan.metric])  # exact, without copying vectors
    truth = _drop_self(ids, sample, k)
    best_value, best = None, -1.0
    for value in search_param_candidates(plan, k):
        set_search_param(index, plan.kind, value)
        recall = recall_at_k(_knn_excluding_self(index, queries, sample, k), truth)
        logger.debug(
            "%s %s=%d: recall@%d %.4f",
            plan.factory_string(),
            SEARCH_PARAM[plan.kind],
            value,
            k,
            recall,
        )
        if recall >= target:
            return value, recall, len(sample)
        if recall < best + PLATEAU:  # doubling no longer helps: the codes cap the recall
            break
        best_value, best = value, recall
    set_search_param(index, plan.kind, best_value)
    logger.warning(
        "%s reaches recall@%d %.3f < target %.3f (at %s=%d, where it stops improving); use kind='flat',"
        " 'ivf_flat' or a larger memory budget",
        plan.factory_string(),
        k,
        best,
        target,
        SEARCH_PARAM[plan.kind],
        best_value,
    )
    return best_value, best, len(sample)


def gpu_available() -> bool:
    """Whether faiss was built with GPU support and sees at least one GPU."""
    return faiss.get_num_gpus() > 0


def to_device(index: faiss.Index, kind: str, use_gpu: bool) -> tuple[faiss.Index, Any]:
    """Clone a CPU index onto GPU 0 when asked and possible; HNSW has no GPU form.

    An index faiss cannot clone (e.g. IVF-PQ with more than 48 code bytes) stays on the CPU,
    with a warning.

    Returns:
        ``(index, resources)``: the GPU index and the ``StandardGpuResources`` it needs kept
        alive, or the CPU index itself and None.
    """
    if not use_gpu or kind == "hnsw" or not gpu_available():
        return index, None
    resources = faiss.StandardGpuResources()
    try:
        return faiss.index_cpu_to_gpu(resources, 0, index), resources
    except RuntimeError as exc:  # e.g. a PQ code size the GPU kernels do not support
        logger.warning(
            "faiss cannot move this %s index to the GPU (%s); searching on the CPU", kind, exc
        )
        return index, None
