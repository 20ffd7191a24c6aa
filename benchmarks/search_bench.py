"""Search: the auto-chosen faiss index vs exact faiss (Flat) vs brute-force numpy, in one run.

Data: ``clustered_vectors(n + 2000, 512, 1000, spread=0.7)`` (``--size`` sets n, default
200,000). 1000 clusters of uneven size (~200 vectors each on average, Dirichlet-distributed)
stand for the fine-grained concepts a video embedding separates; ``spread=0.7`` puts a vector
at cosine ~0.82 from its cluster centre and ~0.67 from a cluster-mate, the range of
nearest-neighbour similarities of real pooled CNN features. The noise inside a cluster is
isotropic, which is harder for an approximate index than real, sub-structured clusters.
The last 2000 vectors are held out as queries (same clusters, never indexed).

Measured: build seconds (auto: training + tuning nprobe to recall@10 0.95 on indexed
vectors), queries/s for the 2000 queries in one batch through ``FeatureIndex.search`` (the
store's search path) and through chunked numpy (matmul + argpartition, the plain
alternative), recall@10 of the auto index and of numpy against exact faiss on the held-out
queries, and bytes per vector of the saved index. Targets: auto recall@10 >= 0.95 and auto
q/s >= 10x exact q/s.

Then the recall/speed curve of the auto index (when it is an IVF index): recall@10 and q/s of
the same held-out queries for each ``nprobe`` the tuning may pick (1, 2, 4, ... up to
``nlist``, stopping after the first point slower than exact Flat: those are dominated by it),
as ``curve_nprobe`` / ``curve_recall10`` / ``curve_qps``; the exact Flat point (recall 1,
``exact_qps``) and the numpy point (``numpy_recall10``, ``numpy_qps``) sit beside it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from typing import Any

import numpy as np

from benchmarks.registry import register_benchmark
from store.index import (
    FeatureIndex,
    IndexSpec,
    clustered_vectors,
    search_param_candidates,
    set_search_param,
)

DIM = 512
N_CLUSTERS = 1000
SPREAD = 0.7
N_QUERIES = 2000
K = 10
NUMPY_CHUNK = 256  # queries per matmul: a (256, n) float32 block


def numpy_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k rows by inner product: chunked matmul, argpartition, then sort the k."""
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), NUMPY_CHUNK):
        sims = queries[s:s + NUMPY_CHUNK] @ base.T  # (q, D) @ (D, n) -> (q, n)
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[s:s + NUMPY_CHUNK] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k."""
    return float(np.mean([len(np.intersect1d(f, t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


def _timed_search(index: FeatureIndex, queries: np.ndarray) -> tuple[np.ndarray, float]:
    index.search(queries[:100], K)  # warm-up
    t = time.perf_counter()
    _, rows = index.search(queries, K)
    return rows, len(queries) / (time.perf_counter() - t)


def recall_qps_curve(index: FeatureIndex, queries: np.ndarray, truth: np.ndarray,
                     slowest_qps: float = 0.0) -> dict[str, list[float]]:
    """Recall@k and q/s of ``index`` at each search-parameter value its tuning may pick (IVF:
    nprobe 1, 2, 4, ... nlist); empty lists for an exact index. The curve stops after the first
    point below ``slowest_qps`` (the exact Flat's: an exact search beats every slower point).
    The tuned value is put back."""
    assert not index.on_gpu, "the curve sets nprobe on the CPU index, the one searched here"
    values = search_param_candidates(index.plan, K)
    curve: dict[str, list[float]] = {"curve_nprobe": [], "curve_recall10": [], "curve_qps": []}
    for value in values:
        set_search_param(index._cpu, index.plan.kind, value)  # FeatureIndex has no public setter
        found, qps = _timed_search(index, queries)
        curve["curve_nprobe"].append(float(value))
        curve["curve_recall10"].append(recall_at_k(found, truth))
        curve["curve_qps"].append(qps)
        if qps < slowest_qps:
            break
    if values:
        set_search_param(index._cpu, index.plan.kind, (index.meta["search_param"] or {}).get("value"))
    return curve


def _saved_bytes(index: FeatureIndex, directory) -> int:
    index.save(directory)
    size = os.path.getsize(directory / "faiss.index")
    shutil.rmtree(directory, ignore_errors=True)
    return size


@register_benchmark("search", "faiss auto index vs exact Flat vs numpy brute force: build, q/s, recall@10, memory")
def bench_search(args: argparse.Namespace) -> dict[str, Any]:
    n = args.size or 200_000
    work = args.workdir / "search"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    data = clustered_vectors(n + N_QUERIES, DIM, N_CLUSTERS, seed=0, spread=SPREAD)
    base, queries = data[:n], np.ascontiguousarray(data[n:])
    print(f"   {n:,} x {DIM} clustered vectors ({N_CLUSTERS} clusters, spread {SPREAD}) + {N_QUERIES} held-out "
          f"queries, made in {time.perf_counter() - t:.1f} s; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    rows = np.arange(n)
    m: dict[str, Any] = {"n_vectors": float(n), "dim": float(DIM)}

    t = time.perf_counter()
    exact = FeatureIndex.from_vectors(base, rows, IndexSpec(kind="flat", gpu=False))
    m["exact_build_s"] = time.perf_counter() - t
    truth, m["exact_qps"] = _timed_search(exact, queries)
    m["exact_bytes_per_vector"] = _saved_bytes(exact, work / "exact") / n
    del exact

    t = time.perf_counter()
    auto = FeatureIndex.from_vectors(base, rows, IndexSpec(kind="auto", gpu=False))
    m["auto_build_s"] = time.perf_counter() - t
    found, m["auto_qps"] = _timed_search(auto, queries)
    m["auto_recall10"] = recall_at_k(found, truth)
    m["auto_tuned_recall10"] = auto.meta["recall"]["value"]
    m["auto_bytes_per_vector"] = _saved_bytes(auto, work / "auto") / n
    print(f"   auto index: {auto.describe()}, build {m['auto_build_s']:.1f} s")
    param = auto.meta["search_param"]
    if param:
        m[f"auto_{param['name']}"] = float(param["value"])
    curve = recall_qps_curve(auto, queries, truth, slowest_qps=m["exact_qps"])
    del auto

    numpy_topk(base, queries[:NUMPY_CHUNK], K)  # warm-up
    t = time.perf_counter()
    brute = numpy_topk(base, queries, K)
    m["numpy_qps"] = N_QUERIES / (time.perf_counter() - t)
    m["numpy_recall10"] = recall_at_k(brute, truth)
    m["numpy_bytes_per_vector"] = float(base.itemsize * DIM)

    m["auto_vs_exact_qps"] = m["auto_qps"] / m["exact_qps"]
    m["auto_vs_numpy_qps"] = m["auto_qps"] / m["numpy_qps"]
    m["exact_vs_numpy_qps"] = m["exact_qps"] / m["numpy_qps"]
    for key, v in m.items():
        print(f"   {key:28s} {v:14,.3f}")
    if curve["curve_nprobe"]:
        print("   nprobe   recall@10         q/s")
        for p, r, q in zip(*curve.values(), strict=True):
            print(f"   {p:6.0f}   {r:9.3f}   {q:9,.0f}")
    m.update(curve)
    ok = m["auto_recall10"] >= 0.95 and m["auto_vs_exact_qps"] >= 10
    print(f"   auto: recall@10 {m['auto_recall10']:.3f} (target >= 0.95), {m['auto_vs_exact_qps']:.1f}x the q/s of "
          f"exact Flat (target >= 10x), {m['auto_vs_numpy_qps']:.1f}x numpy; "
          f"{m['auto_bytes_per_vector']:.0f} bytes/vector vs {m['numpy_bytes_per_vector']:.0f} raw: "
          f"{'targets met' if ok else 'TARGET MISSED'}")
    shutil.rmtree(work, ignore_errors=True)
    return m
