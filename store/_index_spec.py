"""The settings of an index (:class:`IndexSpec`) and the errors index code raises.

Re-exported by ``store.index``; kept apart so the factory and the index class share them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from store.errors import IndexNotFound, InvalidIndexSpec, StaleIndex  # noqa: F401  (re-exported)

KINDS = ("auto", "flat", "ivf_flat", "ivf_fp16", "ivf_sq8", "ivf_pq", "hnsw")
LEVELS = ("video", "clip")
METRIC_NAMES = ("ip", "l2")


@dataclass(frozen=True)
class IndexSpec:
    """What index to build over a feature set.

    Attributes:
        kind: ``auto``, ``flat`` (exact), ``ivf_flat``, ``ivf_fp16`` (IVF with float16
            codes), ``ivf_sq8`` (IVF with 8-bit scalar codes), ``ivf_pq`` or ``hnsw``.
        level: ``video`` (mean of valid clips) or ``clip`` (one vector per valid clip).
        metric: ``ip``: inner product of L2-normalised vectors, i.e. cosine similarity;
            ``l2``: raw vectors, similarity = minus the squared L2 distance.
        recall_target: recall@``recall_k`` the search parameter is tuned to reach.
        recall_k: The k of that recall.
        memory_budget_mb: Most MiB the index may take; decides IVF-fp16 / SQ8 / PQ in auto.
        flat_max_vectors: ``auto`` uses exact search below this many vectors.
        nlist: IVF inverted lists; None: ``4 sqrt(n)``.
        m: IVF-PQ sub-quantizers (code bytes at 8 bits); None: largest that fits the budget.
        nbits: Bits per PQ code.
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build beam width.
        tune_queries: Indexed vectors held out as queries when tuning (500: recall@10 within
            about +-0.005, one standard error, of its value over all vectors).
        seed: Seed of k-means and of the tuning sample.
        gpu: Search on GPU 0 when faiss sees one (never for HNSW).
    """

    kind: str = "auto"
    level: str = "video"
    metric: str = "ip"
    recall_target: float = 0.95
    recall_k: int = 10
    memory_budget_mb: float = 2048.0
    flat_max_vectors: int = 20_000
    nlist: int | None = None
    m: int | None = None
    nbits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 64
    tune_queries: int = 500
    seed: int = 0
    gpu: bool = True

    def __post_init__(self) -> None:
        choices = {"kind": KINDS, "level": LEVELS, "metric": METRIC_NAMES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InvalidIndexSpec(
                    f"index {name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if not 0 < self.recall_target <= 1:
            raise InvalidIndexSpec(f"recall_target must be in (0, 1], got {self.recall_target}")
        if self.memory_budget_mb <= 0:
            raise InvalidIndexSpec(f"memory_budget_mb must be > 0, got {self.memory_budget_mb}")
        positive = {
            "recall_k": self.recall_k,
            "nlist": self.nlist,
            "m": self.m,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "tune_queries": self.tune_queries,
        }
        for name, value in positive.items():
            if value is not None and value < 1:
                raise InvalidIndexSpec(f"{name} must be >= 1, got {value}")
        if not 1 <= self.nbits <= 16 or self.flat_max_vectors < 0:
            raise InvalidIndexSpec(
                f"need 1 <= nbits <= 16 and flat_max_vectors >= 0, got {self.nbits}, {self.flat_max_vectors}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
