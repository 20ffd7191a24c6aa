"""heads.knn: out-of-fold kNN label transfer by hand and against brute force, the prediction run and its
metrics, the label audit on planted noise, and one-line CLI errors."""

import math

import numpy as np
import pandas as pd
import pytest

from heads.knn import knn_neighbours, knn_predictions, label_audit, main
from heads.metrics import evaluate
from heads.trainer import assign_folds
from store import FeatureSetSpec, FeatureStore
from store.index import IndexSpec
from store.testing import make_synthetic_store
from tests.topk import assert_top_k_equal

PAIR_ANGLES = [0.0, 40.0, 80.0, 120.0]  # train pair p sits at PAIR_ANGLES[p] and PAIR_ANGLES[p] + 10 degrees
TWIN = 10.0
VAL_TEST_ANGLES = [23.0, 103.0, 0.0, 100.0]  # rows 8-11; row 10 has no features


def _unit(deg: float) -> np.ndarray:
    r = math.radians(deg)
    return np.array([math.cos(r), math.sin(r), 0.0, 0.0], np.float32)


@pytest.fixture
def tiny(tmp_path):
    """12 videos: 8 train in 4 twin pairs (each video: its private class + its pair's class), 2 val,
    2 test; row 10 has no features. Each row's two clips are v +- e_z, so its mean vector is v. Every
    neighbour order the tests rely on is decided by at least 4 degrees (cosines >= 0.018 apart): no tie."""
    classes = [f"private{i}" for i in range(8)] + [f"pair{p}" for p in range(4)]
    labels = np.zeros((12, 12), np.uint8)
    for i in range(8):
        labels[i, [i, 8 + i // 2]] = 1
    labels[8, 8] = labels[9, 9] = labels[10, 10] = labels[11, 11] = 1
    fs = FeatureStore.create(tmp_path / "tiny.zarr", classes=classes)
    split = ["train"] * 8 + ["val", "val", "test", "test"]
    fs.append_videos(pd.DataFrame({"id": [f"v{i:02d}" for i in range(12)], "path": [f"{i}.mp4" for i in range(12)],
                                   "split": split}), labels)
    angles = [a + d for a in PAIR_ANGLES for d in (0.0, TWIN)] + VAL_TEST_ANGLES
    v = np.stack([_unit(a) for a in angles])  # (12, 4)
    e = np.array([0, 0, 0.5, 0], np.float32)
    data = np.stack([v + e, v - e], axis=1)  # (12, 2, 4)
    fset = fs.create_feature_set("toy", FeatureSetSpec(clips=2, dim=4, dtype="float32", backbone="toy"))
    rows = [r for r in range(12) if r != 10]
    with fset.writer() as w:
        w.write_rows(rows, data[rows])
    return fs, angles


def _seed_with_split_and_joined_twins() -> int:
    """A fold seed under which some twin pairs share a fold and others are split (both cases tested)."""
    for seed in range(50):
        f = assign_folds(8, 2, seed)
        same = f[0::2] == f[1::2]
        if same.any() and not same.all():
            return seed
    raise AssertionError("no such seed")


def test_out_of_fold_votes_by_hand(tiny):
    fs, _ = tiny
    seed = _seed_with_split_and_joined_twins()
    scores, fold = knn_predictions(fs, "toy", k=1, temperature=0.1, folds=2, seed=seed)
    np.testing.assert_array_equal(fold[:8], assign_folds(8, 2, seed))  # the folds heads.train deals
    np.testing.assert_array_equal(fold[8:], -1)
    for i in range(8):
        twin, pair = i ^ 1, 8 + i // 2
        assert scores[i, i] == 0  # a row never votes for itself
        if fold[twin] != fold[i]:  # k=1: the twin is the nearest row outside the fold
            np.testing.assert_allclose(scores[i, [twin, pair]], 1.0)
        else:  # a fold-mate never votes: the twin's labels are absent
            assert scores[i, twin] == 0 and scores[i, pair] == 0
        assert scores[i].sum() == pytest.approx(2.0)  # one neighbour, two labels


def test_val_votes_by_hand_and_rows_without_features(tiny):
    fs, _ = tiny
    scores, fold = knn_predictions(fs, "toy", k=2, temperature=0.1, folds=2)
    # val row 8 at 23 degrees: nearest train rows are v01 (10 deg, 13 away) and v02 (40 deg, 17 away);
    # the next ones, v00 (0 deg) and v03 (50 deg), are 23 and 27 away
    w = np.exp(np.array([math.cos(math.radians(13)), math.cos(math.radians(17))]) / 0.1)
    w /= w.sum()
    expected = np.zeros(12)
    expected[[1, 8]] = w[0]  # private1, pair0
    expected[[2, 9]] = w[1]  # private2, pair1
    np.testing.assert_allclose(scores[8], expected, atol=1e-5)
    # val row 9 at 103 degrees: v05 at 90 (13 away), v06 at 120 (17 away), then v04 at 80 (23 away). Test
    # row 11 at 100 degrees is 3 away, nearer than any train row, and still never votes
    np.testing.assert_allclose(scores[9, [5, 10]], w[0], atol=1e-5)
    np.testing.assert_allclose(scores[9, [6, 11]], w[1], atol=1e-5)
    np.testing.assert_array_equal(scores[10], 0)  # no features: score 0
    assert fold[10] == -1


def _reference(fs, features, k, temperature, fold, found):
    """Brute force: cosine to every allowed train row; ``found`` (the rows the index returned) must be a top
    k of those (any order among near-ties); their votes are softmax(sim / T) over their labels."""
    data, valid = fs.feature_set(features).read()
    has = valid.any(axis=1) & fs.feature_set(features).done()
    mean = (data * valid[..., None]).sum(1) / np.maximum(valid.sum(1), 1)[:, None]
    v = mean / np.linalg.norm(mean, axis=1, keepdims=True).clip(1e-12)
    train = np.zeros(len(v), bool)
    train[fs.split_rows("train")] = True
    labels = fs.labels().astype(np.float64)
    out = np.zeros(labels.shape)
    for i in np.flatnonzero(has):
        allowed = train & has & ((fold != fold[i]) if fold[i] >= 0 else True)
        allowed[i] = False
        sims = np.where(allowed, v @ v[i], -np.inf)  # (N,)
        assert_top_k_equal(found[i : i + 1], sims[None])
        top = sims[found[i]]  # (k,)
        w = np.exp((top - top.max()) / temperature)
        out[i] = (w / w.sum()) @ labels[found[i]]
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_store(tmp_path_factory.mktemp("knn") / "s.zarr", n_videos=300, n_classes=8, clips=4,
                                dim=16, noise=1.5, chunk_rows=64)


@pytest.mark.parametrize("folds", [5, 0])
def test_flat_scores_equal_brute_force(synthetic, folds):
    scores, fold = knn_predictions(synthetic, "synthetic", k=5, temperature=0.2, folds=folds, seed=3,
                                   index_spec=IndexSpec(kind="flat"))
    if folds:
        train = synthetic.split_rows("train")
        assert (fold[train] >= 0).all() and np.bincount(fold[train]).min() >= len(train) // 5
    nb = knn_neighbours(synthetic, "synthetic", k=5, folds=folds, seed=3, index_spec=IndexSpec(kind="flat"))
    np.testing.assert_array_equal(nb.fold, fold)
    reference = _reference(synthetic, "synthetic", 5, 0.2, fold, nb.rows)
    np.testing.assert_allclose(scores, reference, atol=1e-5)


@pytest.mark.parametrize("spec", [IndexSpec(kind="ivf_flat", nlist=4, recall_target=0.5),
                                  IndexSpec(kind="ivf_fp16", nlist=4, recall_target=0.5),
                                  IndexSpec(kind="flat", level="clip")], ids=["ivf", "ivf_fp16", "clip"])
def test_train_rows_never_retrieve_themselves_or_fold_mates(synthetic, spec):
    nb = knn_neighbours(synthetic, "synthetic", k=8, folds=4, index_spec=spec)
    train = np.zeros(synthetic.n_videos, bool)
    train[synthetic.split_rows("train")] = True
    real = nb.rows >= 0
    assert real[nb.queried].all()  # every queried row found k neighbours
    assert train[nb.rows[real]].all()  # only train rows ever vote
    r, j = np.nonzero(real)
    hit = nb.rows[r, j]
    assert (hit != r).all()
    oof = train[r]
    assert (nb.fold[hit[oof]] != nb.fold[r[oof]]).all()
    for i in np.flatnonzero(nb.queried):  # one vote per neighbour video (clip level: no repeats)
        assert len(set(nb.rows[i])) == 8


def test_cli_writes_run_whose_metrics_match_evaluate(synthetic, capsys):
    code = main(["--store", str(synthetic.path), "--features", "synthetic", "--k", "7", "--folds", "3", "-q"])
    out = capsys.readouterr().out
    assert code == 0, out
    fs = FeatureStore.open(synthetic.path)
    scores, attrs = fs.read_predictions("knn_synthetic_k7")
    fold = fs.read_prediction_folds("knn_synthetic_k7")
    ref_scores, ref_fold = knn_predictions(fs, "synthetic", k=7, folds=3)
    np.testing.assert_array_equal(fold, ref_fold)
    np.testing.assert_allclose(scores, ref_scores)
    labels = fs.labels()
    for split, key in (("val", "val"), ("test", "test"), ("train", "train_oof")):
        rows = fs.split_rows(split)
        assert attrs["metrics"][key] == pytest.approx(evaluate(scores[rows], labels[rows]))
    assert attrs["head"] == "knn" and attrs["score_type"] == "probability" and attrs["features"] == ["synthetic"]
    assert (attrs["k"], attrs["folds"], attrs["temperature"]) == (7, 3, 0.1)
    assert f"{attrs['metrics']['val']['class_map']:.4f}" in out and "class mAP" in out
    assert attrs["metrics"]["val"]["class_map"] > 0.5  # the synthetic features carry the labels


def _noisy_store(path, flipped_rows):
    """400 videos whose features follow their true labels; the stored labels of ``flipped_rows`` are wrong."""
    rng = np.random.default_rng(1)
    n, c, d = 400, 10, 32
    true = np.zeros((n, c), np.uint8)
    for i in range(n):
        true[i, rng.choice(c, size=rng.integers(1, 3), replace=False)] = 1
    stored = true.copy()
    for i in flipped_rows:
        stored[i] = 0
        stored[i, rng.choice(np.flatnonzero(true[i] == 0))] = 1
    fs = FeatureStore.create(path, classes=[f"c{i}" for i in range(c)])
    split = np.where(np.arange(n) < 300, "train", "val")
    fs.append_videos(pd.DataFrame({"id": [f"v{i:03d}" for i in range(n)], "path": [f"{i}.mp4" for i in range(n)],
                                   "split": split}), stored)
    protos = rng.standard_normal((c, d)).astype(np.float32)
    data = (true.astype(np.float32) @ protos)[:, None, :] + 0.8 * rng.standard_normal((n, 2, d)).astype(np.float32)
    fset = fs.create_feature_set("f", FeatureSetSpec(clips=2, dim=d, backbone="toy"))
    with fset.writer() as w:
        w.write_rows(np.arange(n), data)
    return fs, true


def test_audit_ranks_planted_label_noise_first(tmp_path, capsys):
    flipped = np.random.default_rng(7).choice(300, size=10, replace=False)
    fs, true = _noisy_store(tmp_path / "noisy.zarr", flipped)
    table = label_audit(fs, "f", k=10)
    assert len(table) == 300 and list(table["rank"]) == list(range(1, 301))
    top = table["row"].to_numpy()[:10]
    assert len(set(top) & set(flipped)) >= 9  # precision@10 >= 0.9
    first = table.iloc[0]
    assert first["disagreement"] > 0.9
    assert true[first["row"], fs.classes.index(first["missing_label_suggested"])] == 1  # suggests a true label
    assert table["disagreement"].is_monotonic_decreasing
    code = main(["--store", str(fs.path), "--features", "f", "--audit", "--out", str(tmp_path / "a.csv"),
                 "--top", "10", "-q"])
    assert code == 0
    csv = pd.read_csv(tmp_path / "a.csv", keep_default_na=False)
    assert list(csv.columns) == ["rank", "id", "path", "labels", "disagreement", "missing_label_suggested",
                                 "missing_label_score", "neighbour_ids", "row"]
    assert list(csv["id"]) == list(table["id"][:10])
    assert len(csv["neighbour_ids"][0].split(";")) == 5
    assert "wrote 10 audited" in capsys.readouterr().out
    assert fs.prediction_runs() == []  # the audit writes no run


@pytest.mark.parametrize("args, message", [
    (["--store", "{missing}", "--features", "toy"], "no"),
    (["--store", "{store}", "--features", "nope"], "no feature set 'nope'"),
    (["--store", "{store}", "--features", "toy", "--folds", "1"], "folds 0"),
    (["--store", "{store}", "--features", "toy", "--top", "5"], "belong to --audit"),
    (["--store", "{store}", "--features", "toy", "--run", "../x"], "invalid run name"),
])
def test_cli_errors_are_one_line_exit_2(tiny, tmp_path, capsys, args, message):
    """(Zero and negative --k, --temperature are the parser's: tests/benchmarks/test_command_counts.py.)"""
    fs, _ = tiny
    argv = [a.format(store=fs.path, missing=tmp_path / "missing.zarr") for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert FeatureStore.open(fs.path).prediction_runs() == []


def test_small_query_blocks_write_the_same_run_as_one_block(synthetic, monkeypatch):
    import heads.knn as knn

    whole = knn.write_knn_run(synthetic, "synthetic", run="knn_one_block", k=5, folds=3)
    monkeypatch.setattr(knn, "QUERY_BLOCK_ROWS", 37)  # searches: one 64-row chunk a block; writes split chunks
    blocked = knn.write_knn_run(synthetic, "synthetic", run="knn_blocks", k=5, folds=3)
    one, _ = synthetic.read_predictions("knn_one_block")
    many, _ = synthetic.read_predictions("knn_blocks")
    np.testing.assert_array_equal(many, one)
    np.testing.assert_array_equal(blocked.fold, whole.fold)
    assert blocked.attrs["metrics"] == whole.attrs["metrics"]


def test_locality_order_changes_only_the_order_of_the_searches(synthetic, monkeypatch):
    """IVF queries are searched grouped by their nearest list; the neighbours are those of the plain order."""
    import heads.knn as knn
    from store.index import FeatureIndex

    spec = IndexSpec(kind="ivf_flat", nlist=8, recall_target=0.9)
    monkeypatch.setattr(knn, "SEARCH_BATCH", 50)  # several batches, each a run of lists
    ordered = knn_neighbours(synthetic, "synthetic", k=5, folds=3, index_spec=spec)
    monkeypatch.setattr(FeatureIndex, "locality_order", lambda self, vectors: np.arange(len(vectors)))
    plain = knn_neighbours(synthetic, "synthetic", k=5, folds=3, index_spec=spec)
    np.testing.assert_array_equal(ordered.rows, plain.rows)
    np.testing.assert_array_equal(ordered.sims, plain.sims)
