"""store.index: exact search against numpy, tuned recall, persistence, incremental add, staleness."""

import json
import logging

import faiss
import numpy as np
import pandas as pd
import pytest

from store import FeatureSetSpec, FeatureStore, _coarse_kmeans
from store import index as I
from store._index_factory import (
    IndexPlan,
    default_nlist,
    estimate_mb,
    plan_index,
    recall_at_k,
    set_search_param,
    train_sample_size,
)
from store.errors import StoreError
from store.search import propagate_labels, search_by_rows
from tests.topk import assert_top_k_equal

N, K, D = 300, 3, 16


def _exact_sims(db, queries, exclude=None):
    """All inner products in float64, ``-inf`` at each query's excluded id."""
    sims = queries.astype(np.float64) @ db.T.astype(np.float64)  # (q, D) @ (D, n) -> (q, n)
    if exclude is not None:
        sims[np.arange(len(queries)), exclude] = -np.inf
    return sims


def _brute_force(db, queries, k, exclude=None):
    """Top-k (sims, ids) by inner product in numpy, optionally leaving one id out per query."""
    sims = _exact_sims(db, queries, exclude)
    ids = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, ids, axis=1), ids


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _make_store(path, n=N, seed=0):
    """A store of n videos with labels = cluster (one-hot of 4 classes) and a set 'f' with no rows done yet."""
    fs = FeatureStore.create(path, classes=["a", "b", "c", "d"])
    centres, assign = I.clustered_vectors(n, D, 4, seed=seed, return_assignment=True)
    fs.append_videos(
        pd.DataFrame({"id": [f"v{i}" for i in range(n)], "path": [f"{i}.mp4" for i in range(n)]}),
        np.eye(4, dtype=np.uint8)[assign],
    )
    fset = fs.create_feature_set("f", FeatureSetSpec(clips=K, dim=D, backbone="toy", chunk_rows=64))
    rng = np.random.default_rng(seed)
    data = centres[:, None, :] + 0.3 * rng.standard_normal((n, K, D)).astype(
        np.float32
    )  # (n, K, D)
    valid = np.ones((n, K), bool)
    valid[::7, 1:] = False  # some videos have a single clip
    return fs, fset, data, valid


def _write(fset, rows, data, valid):
    with fset.writer() as w:
        w.write_rows(rows, data[rows], valid=valid[rows])


@pytest.fixture
def store(tmp_path):
    fs, fset, data, valid = _make_store(tmp_path / "s.zarr")
    _write(fset, np.arange(N), data, valid)
    return fs, fset


# ---------------------------------------------------------------------- exact search and vectors
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_search_equals_brute_force(metric):
    x = (
        I.clustered_vectors(2000, 24, 10, seed=3)
        * np.linspace(0.5, 2, 2000, dtype=np.float32)[:, None]
    )
    q = I.clustered_vectors(50, 24, 10, seed=4)
    index = I.FeatureIndex.from_vectors(
        x, np.arange(2000) + 1000, I.IndexSpec(kind="flat", metric=metric)
    )
    sims, rows = index.search(q, 7)
    if metric == "ip":
        ref = _exact_sims(_unit(x), _unit(q))
    else:
        diff = q[:, None, :].astype(np.float64) - x[None, :, :]  # (q, 1, D) - (1, n, D) -> (q, n, D)
        ref = -(diff**2).sum(-1)  # (q, n, D) -> (q, n)
    assert_top_k_equal(rows - 1000, ref, atol=1e-4)  # the 2000 clustered vectors hold near-ties
    np.testing.assert_allclose(sims, np.take_along_axis(ref, rows - 1000, 1), rtol=1e-4, atol=1e-4)


def test_exclude_rows_and_padding():
    x = I.clustered_vectors(20, 8, 2, seed=0)
    index = I.FeatureIndex.from_vectors(x, np.arange(20), I.IndexSpec(kind="flat"))
    sims, rows = index.search(x[:5], 3, exclude_rows=np.arange(5))
    ref = _exact_sims(x, x[:5], exclude=np.arange(5))
    assert_top_k_equal(rows, ref)
    np.testing.assert_allclose(sims, np.take_along_axis(ref, rows, 1), atol=1e-5)
    sims, rows = index.search(x[:2], 25, exclude_rows=[0, 1])  # more than the index holds
    assert (
        (rows[:, :19] >= 0).all() and (rows[:, 19:] == -1).all() and np.isneginf(sims[:, 19:]).all()
    )
    assert 0 not in rows[0] and 1 not in rows[1]


def test_search_stops_when_the_probed_lists_run_out():
    x = I.clustered_vectors(1000, 8, 10, seed=0)
    index = I.FeatureIndex.from_vectors(x, np.arange(1000), I.IndexSpec(kind="ivf_flat", nlist=25))
    index._cpu.nprobe = 1  # one list of ~40 vectors: 100 neighbours cannot be found
    calls = []
    inner = index._index
    index._index = type(
        "Counting", (), {"search": lambda self, q, k: calls.append(k) or inner.search(q, k)}
    )()
    sims, rows = index.search(x[:3], 100, exclude_rows=[0, 1, 2])
    assert calls == [101] and (rows[:, -1] == -1).all() and (rows[:, 0] >= 0).all()
    assert np.isneginf(sims[rows < 0]).all()


def test_feature_vectors_are_normalised_means_of_valid_clips(store, monkeypatch):
    _, fset = store
    with fset.writer() as w:  # row 5 done but without any valid clip: left out
        w.write_rows([5], np.zeros((1, K, D)), valid=np.zeros((1, K), bool))
    vectors, rows, clips = I.feature_vectors(fset)
    data, valid = fset.read()
    keep = np.flatnonzero(valid.any(1))
    ref = _unit(
        (data * valid[..., None]).sum(1)[keep] / valid[keep].sum(1, keepdims=True)
    )  # (n, K, D) -> (n, D)
    assert 5 not in rows and clips is None
    np.testing.assert_array_equal(rows, keep)
    np.testing.assert_allclose(vectors, ref, atol=1e-6)
    cv, crows, cclips = I.feature_vectors(fset, level="clip")
    assert len(cv) == valid.sum()
    np.testing.assert_allclose(cv, _unit(data[crows, cclips]), atol=1e-6)
    assert I.build_index(fset).meta["excluded_rows"] == [5]
    monkeypatch.setattr(I, "read_vectors", lambda *a, **kw: pytest.fail("row 5 was read again"))
    assert I.update_index(fset).n_vectors == N - 1  # the empty row is remembered, not re-read


# ---------------------------------------------------------------------- approximate indexes
@pytest.mark.parametrize("kind", ["ivf_flat", "ivf_fp16", "ivf_sq8", "hnsw"])
def test_approximate_index_reaches_recall_target(kind):
    x = I.clustered_vectors(20_000, 64, 100, seed=0)
    index = I.FeatureIndex.from_vectors(
        x, np.arange(len(x)), I.IndexSpec(kind=kind, recall_target=0.95)
    )
    recall = index.meta["recall"]
    assert recall["met"] and recall["value"] >= 0.95 and recall["n_queries"] == 500
    assert index.meta["search_param"]["name"] == ("efSearch" if kind == "hnsw" else "nprobe")
    # Fresh queries (not the tuning sample), each excluding itself, against numpy brute force.
    q = np.random.default_rng(99).choice(len(x), 500, replace=False)
    _, truth = _brute_force(x, x[q], 10, exclude=q)
    _, found = index.search(x[q], 10, exclude_rows=q)
    assert recall_at_k(found, truth) >= 0.94


def test_ivf_pq_tunes_nprobe_and_reports_unreachable_targets(caplog):
    x = I.clustered_vectors(2000, 16, 30, seed=1)
    index = I.FeatureIndex.from_vectors(
        x, np.arange(2000), I.IndexSpec(kind="ivf_pq", m=8, recall_target=0.8, tune_queries=300)
    )
    assert index.meta["factory"].startswith("IVF51,PQ8x8") and index.meta["recall"]["value"] >= 0.8
    q = np.arange(0, 2000, 7)
    _, truth = _brute_force(x, x[q], 10, exclude=q)
    assert recall_at_k(index.search(x[q], 10, exclude_rows=q)[1], truth) >= 0.75
    with caplog.at_level(
        logging.WARNING
    ):  # 2-byte codes cannot reach 0.99: tuning stops at the plateau
        weak = I.FeatureIndex.from_vectors(
            x,
            np.arange(2000),
            I.IndexSpec(kind="ivf_pq", m=2, recall_target=0.99, tune_queries=300),
        )
    assert not weak.meta["recall"]["met"] and weak.meta["recall"]["value"] < 0.9
    nprobe = weak.meta["search_param"]["value"]
    assert nprobe < 51 and faiss.extract_index_ivf(weak._cpu).nprobe == nprobe
    assert "stops improving" in caplog.text


def test_auto_rule():
    spec = I.IndexSpec()
    assert plan_index(spec, 19_999, 512).kind == "flat"
    ivf = plan_index(spec, 200_000, 512)
    assert (ivf.kind, ivf.nlist) == ("ivf_fp16", 1789) and ivf.nlist == default_nlist(200_000)
    assert ivf.factory_string() == "IVF1789,SQfp16"
    at_1m = plan_index(spec, 1_000_000, 256)  # issue 21's size: 2 * 256 + 8 bytes a vector, 496 MiB + centroids
    assert at_1m.factory_string() == "IVF4000,SQfp16" and estimate_mb(at_1m, 1_000_000) == pytest.approx(
        (1_000_000 * 520 + 4000 * 256 * 4) / 2**20
    )
    sq8 = plan_index(spec, 3_000_000, 512)  # 2.9 GiB of float16 codes > 2 GiB budget; 8-bit codes fit
    assert sq8.kind == "ivf_sq8" and estimate_mb(sq8, 3_000_000) <= spec.memory_budget_mb
    pq = plan_index(I.IndexSpec(memory_budget_mb=500), 2_000_000, 512)
    assert pq.kind == "ivf_pq" and pq.m == 32 and pq.factory_string() == "IVF5657,PQ32x8np"
    small = plan_index(I.IndexSpec(memory_budget_mb=70), 2_000_000, 512)
    assert small.m == 16 and estimate_mb(small, 2_000_000) <= 70
    with pytest.raises(ValueError, match="memory_budget_mb"):
        plan_index(I.IndexSpec(memory_budget_mb=1), 2_000_000, 512)
    assert default_nlist(1000) == 25  # capped at one list per 39 vectors
    assert plan_index(I.IndexSpec(kind="hnsw"), 10, 8).factory_string() == "HNSW32,Flat"


def test_spec_round_trip_and_validation():
    spec = I.IndexSpec(kind="ivf_pq", level="clip", nlist=64, m=8, recall_target=0.9)
    assert I.IndexSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert IndexPlan.from_dict(plan_index(spec, 1000, 16).to_dict()) == plan_index(spec, 1000, 16)
    for bad in (
        {"kind": "lsh"},
        {"level": "frame"},
        {"metric": "cos"},
        {"recall_target": 0},
        {"nlist": 0},
        {"memory_budget_mb": -1},
    ):
        with pytest.raises(I.InvalidIndexSpec):
            I.IndexSpec(**bad)
    with pytest.raises(I.InvalidIndexSpec, match="at least 64 vectors"):
        I.FeatureIndex.from_vectors(
            np.ones((10, 4)), np.arange(10), I.IndexSpec(kind="ivf_flat", nlist=64)
        )


# ---------------------------------------------------------------------- persistence
def test_save_load_round_trip_and_crash_safe_save(tmp_path, monkeypatch):
    x = I.clustered_vectors(3000, 16, 20, seed=2)
    index = I.FeatureIndex.from_vectors(
        x, np.arange(3000), I.IndexSpec(kind="ivf_flat", recall_target=0.99)
    )
    index.save(tmp_path / "index")
    loaded = I.FeatureIndex.load(tmp_path / "index")
    assert loaded.meta["search_param"] == index.meta["search_param"]
    assert faiss.extract_index_ivf(loaded._cpu).nprobe == index.meta["search_param"]["value"]
    for a, b in zip(index.search(x[:50], 10), loaded.search(x[:50], 10), strict=True):
        np.testing.assert_array_equal(a, b)

    def broken_write(*args):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken_write)
    with pytest.raises(OSError, match="disk full"):
        loaded.save(tmp_path / "index")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "index"
    ]  # old index intact, no temp dir left
    assert I.FeatureIndex.load(tmp_path / "index").n_vectors == 3000


def test_index_saved_beside_feature_set_keeps_store_valid(store):
    from store.verify import verify_store

    fs, fset = store
    built = I.build_index(fset)
    d = fset.path / "index"
    assert sorted(p.name for p in d.iterdir()) == ["faiss.index", "meta.json", "rows.npy"]
    meta = json.loads((d / "meta.json").read_text())
    assert meta["feature_set"]["fingerprint"] == fset.spec.fingerprint() and meta["n_vectors"] == N
    assert meta["plan"]["kind"] == "flat" and meta["spec"] == I.IndexSpec().to_dict()
    assert verify_store(fs.path).ok
    again = I.open_index(FeatureStore.open(fs.path).feature_set("f"))
    np.testing.assert_array_equal(again.rows, built.rows)


def test_read_only_store_keeps_index_in_memory(store):
    fs, _ = store
    fset = FeatureStore.open(fs.path, "r").feature_set("f")
    assert I.build_index(fset).n_vectors == N
    assert not (fset.path / "index").exists()


# ---------------------------------------------------------------------- incremental add and staleness
@pytest.mark.parametrize("level", ["video", "clip"])
def test_update_index_equals_rebuild(tmp_path, level):
    _, fset, data, valid = _make_store(tmp_path / "s.zarr")
    spec = I.IndexSpec(kind="flat", level=level)
    first = np.arange(0, N, 2)
    _write(fset, first, data, valid)
    assert I.build_index(fset, spec).n_vectors == (
        len(first) if level == "video" else valid[first].sum()
    )
    _write(fset, np.arange(1, N, 2), data, valid)
    updated = I.update_index(fset)
    assert I.open_index(fset).n_vectors == updated.n_vectors  # the update was saved
    rebuilt = I.FeatureIndex.from_vectors(
        *I.feature_vectors(fset, level=level)[:2],
        spec,
        clips=I.feature_vectors(fset, level=level)[2],
    )
    queries = I.clustered_vectors(40, D, 4, seed=5)
    s1, r1 = updated.search(queries, 10)
    s2, r2 = rebuilt.search(queries, 10)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_allclose(s1, s2, rtol=1e-6)
    assert I.update_index(fset) is not None  # nothing new: no change
    assert I.open_index(fset).n_vectors == updated.n_vectors


def test_ivf_incremental_add_equals_adding_to_the_trained_index():
    x = I.clustered_vectors(6000, 16, 20, seed=7)
    index = I.FeatureIndex.from_vectors(x[:4000], np.arange(4000), I.IndexSpec(kind="ivf_flat"))
    trained_empty = faiss.clone_index(index._cpu)
    trained_empty.reset()  # same quantizer, no vectors
    index.add(x[4000:], np.arange(4000, 6000))
    trained_empty.add(x)
    _, ref_pos = trained_empty.search(x[::50], 10)
    _, pos = index.search_positions(x[::50], 10)
    np.testing.assert_array_equal(pos, ref_pos)


def test_stale_index_is_refused_with_a_clear_message(store):
    fs, fset = store
    I.build_index(fset)
    changed = dict(fset.group.attrs["spec"], backbone="other", weights_sha256="abc")
    fset.group.attrs["spec"] = changed  # features re-made by another backbone
    fset = FeatureStore.open(fs.path, "a").feature_set("f")
    with pytest.raises(I.StaleIndex, match=r"backbone: 'toy' -> 'other'.*--rebuild"):
        I.open_index(fset)
    with pytest.raises(I.StaleIndex):
        I.ensure_index(fset)
    assert (
        I.ensure_index(fset, rebuild=True).meta["feature_set"]["provenance"]["backbone"] == "other"
    )
    assert I.open_index(fset).n_vectors == N


def test_rows_no_longer_done_make_the_index_stale(store):
    _, fset = store
    I.build_index(fset)
    with fset.writer() as w:
        w.write_errors([17], ["file vanished"])  # row 17 is no longer extracted
    with pytest.raises(I.StaleIndex, match="row 17"):
        I.open_index(fset)


def test_missing_index_and_spec_change(store):
    fs, fset = store
    with pytest.raises(I.IndexNotFound, match="build"):
        search_by_rows(fs, "f", [0])
    assert I.ensure_index(fset).plan.kind == "flat"
    assert I.ensure_index(fset, I.IndexSpec(kind="hnsw")).plan.kind == "hnsw"  # other spec: rebuilt
    assert I.saved_spec(fset).kind == "hnsw"


# ---------------------------------------------------------------------- store-level queries
def test_query_by_row_excludes_the_video_itself(store):
    fs, fset = store
    index = I.build_index(fset)
    rows = np.array([0, 1, 2, 150])
    sims, nrows = search_by_rows(fs, "f", rows, 5, index=index)
    assert not (nrows == rows[:, None]).any()
    vectors, vrows, _ = I.feature_vectors(fset)
    assert (np.diff(vrows) > 0).all()  # vector i is store row vrows[i]
    at = np.searchsorted(vrows, rows)
    assert_top_k_equal(np.searchsorted(vrows, nrows), _exact_sims(vectors, vectors[at], exclude=at))
    sims, nrows = search_by_rows(fs, "f", rows, 5, exclude_self=False, index=index)
    np.testing.assert_array_equal(nrows[:, 0], rows)
    np.testing.assert_allclose(sims[:, 0], 1, atol=1e-5)


def test_clip_level_search_returns_distinct_videos_by_closest_clip(store):
    fs, fset = store
    index = I.build_index(fset, I.IndexSpec(kind="flat", level="clip"))
    q = I.clustered_vectors(20, D, 4, seed=8)
    sims, rows = index.search(q, 6)
    data, valid = fset.read()
    clip_sims = np.einsum(
        "qd,nkd->qnk", q, data / np.linalg.norm(data, axis=2, keepdims=True).clip(1e-12)
    )
    best = np.where(valid[None], clip_sims, -np.inf).max(axis=2)  # (q, n, K) -> (q, n)
    assert_top_k_equal(rows, best)  # six distinct videos, the nearest by their closest clip
    np.testing.assert_allclose(sims, np.take_along_axis(best, rows, 1), atol=1e-5)
    _, by_row = search_by_rows(fs, "f", [3], 6, index=index)
    assert 3 not in by_row[0] and len(set(by_row[0])) == 6


def test_propagate_labels_by_hand():
    labels = np.array([[1, 0], [0, 1], [1, 1]], np.uint8)
    sims = np.array([[0.9, 0.8, -np.inf], [0.5, 0.5, 0.5], [-np.inf, -np.inf, -np.inf]])
    rows = np.array([[0, 2, -1], [0, 1, 2], [-1, -1, -1]])
    scores = propagate_labels(sims, rows, labels, temperature=0.1)
    w0 = np.exp(9) / (np.exp(9) + np.exp(8))  # softmax([0.9, 0.8] / 0.1)[0] = e / (e + 1) = 0.7311
    np.testing.assert_allclose(scores, [[1.0, 1 - w0], [2 / 3, 2 / 3], [0, 0]], rtol=1e-6)
    assert abs(w0 - 0.7311) < 1e-4
    sharp = propagate_labels(
        sims[:1], rows[:1], labels, temperature=1e-4
    )  # T -> 0: nearest neighbour only
    np.testing.assert_allclose(sharp, [[1, 0]], atol=1e-6)
    with pytest.raises(ValueError):
        propagate_labels(sims, rows, labels, temperature=0)


# ---------------------------------------------------------------------- GPU placement
class _FakeResources:
    pass


@pytest.mark.parametrize(
    ("kind", "gpu", "moved"),
    [("flat", True, True), ("ivf_flat", True, True), ("ivf_fp16", True, True), ("hnsw", True, False),
     ("flat", False, False)],
)
def test_gpu_placement(monkeypatch, kind, gpu, moved):
    calls = []

    def fake_to_gpu(resources, device, index):
        calls.append((type(resources), device))
        return index  # stands in for the GPU clone

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", _FakeResources, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", fake_to_gpu, raising=False)
    x = I.clustered_vectors(500, 8, 4, seed=0)
    index = I.FeatureIndex.from_vectors(x, np.arange(500), I.IndexSpec(kind=kind, gpu=gpu))
    assert index.on_gpu is moved and calls == ([(_FakeResources, 0)] if moved else [])
    index.add(x[:3], [500, 501, 502])  # the grown CPU index is cloned again
    assert len(calls) == (2 if moved else 0)


def test_index_the_gpu_cannot_hold_stays_on_cpu(monkeypatch, caplog):
    def refuse(resources, device, index):
        raise RuntimeError(
            "Number of bytes per encoded vector / sub-quantizers (64) is not supported"
        )

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", _FakeResources, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", refuse, raising=False)
    with caplog.at_level(logging.WARNING):
        index = I.FeatureIndex.from_vectors(
            np.eye(4, dtype=np.float32), np.arange(4), I.IndexSpec(kind="flat")
        )
    assert not index.on_gpu and "searching on the CPU" in caplog.text
    np.testing.assert_array_equal(index.search(np.eye(4)[:1], 1)[1], [[0]])


def test_store_errors_are_store_errors():
    assert issubclass(I.StaleIndex, StoreError) and issubclass(I.IndexNotFound, StoreError)
    assert issubclass(I.InvalidIndexSpec, StoreError)


@pytest.mark.parametrize("kind", ["flat", "ivf_flat", "hnsw"])
def test_search_among_allowed_vectors_equals_brute_force(kind):
    """An ID selector restricts hits to the allowed vectors; IVF probes every list (exact)."""
    x = I.clustered_vectors(2000, 32, 12, seed=4)
    rows = np.arange(2000) * 3
    index = I.FeatureIndex.from_vectors(x, rows, I.IndexSpec(kind=kind, nlist=16, recall_target=0.5))
    if kind == "ivf_flat":
        set_search_param(index._cpu, "ivf_flat", 16)  # nprobe = nlist: the selector must keep it
    elif kind == "hnsw":
        set_search_param(index._cpu, "hnsw", 2048)
    allowed = np.random.default_rng(0).random(2000) < 0.4
    sims, found = index.search(x[:40], 7, exclude_rows=rows[:40], allowed=allowed)
    cos = x[:40] @ x.T  # (40, 2000)
    cos[:, ~allowed] = -np.inf
    cos[np.arange(40), np.arange(40)] = -np.inf  # the query's own row is excluded
    top = np.argsort(-cos, axis=1)[:, :7]
    np.testing.assert_array_equal(found, rows[top])
    np.testing.assert_allclose(sims, np.take_along_axis(cos, top, axis=1), atol=1e-5)
    assert allowed[found // 3].all()


def test_ivf_trains_on_a_bounded_sample():
    plan = IndexPlan("ivf_flat", dim=8, nlist=4000)
    assert train_sample_size(plan, 1_000_000) == 39 * 4000  # faiss's minimum per centroid beats the cap
    assert train_sample_size(IndexPlan("ivf_flat", dim=8, nlist=100), 1_000_000) == 25_600  # 256 per centroid
    assert train_sample_size(IndexPlan("ivf_flat", dim=8, nlist=1000), 1_000_000) == 100_000  # the cap
    assert train_sample_size(IndexPlan("ivf_flat", dim=8, nlist=1000), 50_000) == 50_000
    assert train_sample_size(IndexPlan("flat", dim=8), 7) == 7
    x = I.clustered_vectors(30_000, 16, 20, seed=2)
    index = I.FeatureIndex.from_vectors(x, np.arange(30_000), I.IndexSpec(kind="ivf_flat", nlist=40))
    assert index.meta["train_vectors"] == 256 * 40 and index.meta["recall"]["met"]


def test_two_level_shares_split_lists_by_group_size():
    shares = _coarse_kmeans._shares(np.array([500, 0, 300, 200]), 40)
    np.testing.assert_array_equal(shares, [20, 0, 12, 8])
    shares = _coarse_kmeans._shares(np.array([7, 1, 1, 1]), 9)  # floors of the cumulative shares
    assert shares.sum() == 9 and (shares <= [7, 1, 1, 1]).all()


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_two_level_kmeans_fills_every_list_and_reaches_the_recall_target(monkeypatch, metric):
    """From TWO_LEVEL_MIN_NLIST lists on, the quantizer comes from two-level k-means: nlist distinct
    centroids (unit norm for ip, as faiss's spherical IVF k-means), lists that all hold vectors, recall met."""
    x = I.clustered_vectors(12_000, 32, 30, seed=3)
    spec = I.IndexSpec(kind="ivf_flat", nlist=100, metric=metric)
    one_level = I.FeatureIndex.from_vectors(x, np.arange(len(x)), spec)
    monkeypatch.setattr(_coarse_kmeans, "TWO_LEVEL_MIN_NLIST", 64)
    index = I.FeatureIndex.from_vectors(x, np.arange(len(x)), spec)
    ivf = faiss.extract_index_ivf(index._cpu)
    centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist)  # (100, 32)
    assert not np.allclose(centroids, faiss.extract_index_ivf(one_level._cpu).quantizer.reconstruct_n(0, 100))
    assert len(np.unique(centroids, axis=0)) == 100
    if metric == "ip":
        np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    sizes = np.array([ivf.invlists.list_size(i) for i in range(ivf.nlist)])
    assert sizes.sum() == len(x) and (sizes > 0).mean() >= 0.95  # a centroid may lose its points to a neighbour group's
    assert index.meta["recall"]["met"] and index.meta["train_vectors"] == len(x)


def test_locality_order_groups_queries_by_their_nearest_list():
    x = I.clustered_vectors(3000, 16, 10, seed=5)
    index = I.FeatureIndex.from_vectors(x, np.arange(3000), I.IndexSpec(kind="ivf_flat", nlist=20))
    q = x[:500]
    order = index.locality_order(q)
    np.testing.assert_array_equal(np.sort(order), np.arange(500))
    _, lists = faiss.extract_index_ivf(index._cpu).quantizer.search(q, 1)  # (500, 1), the same batch
    assert (np.diff(lists[order, 0]) >= 0).all()
    flat = I.FeatureIndex.from_vectors(x, np.arange(3000), I.IndexSpec(kind="flat"))
    np.testing.assert_array_equal(flat.locality_order(q), np.arange(500))
