"""heads.train's predictions in small row blocks equal the whole-store computation (20k-row store)."""

import numpy as np
import pytest
import torch

import heads.trainer
from heads.metrics import evaluate
from heads.trainer import TrainConfig, build_head, train_head
from store.testing import make_clustered_store

N = 20_000
CLASSES = 12
FAST = {"features": ("clustered",), "head": "mean_mlp", "head_kwargs": {"hidden_dim": 16}, "epochs": 1,
        "batch_size": 256, "lr": 3e-3, "warmup": 0.0, "device": "cpu"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_clustered_store(tmp_path_factory.mktemp("blocks") / "s.zarr", n_videos=N, n_classes=CLASSES,
                                clips=4, dim=16, block=4096, chunk_rows=256)


def _whole(store, res):
    """Every row's scores from the trained states, all rows in one forward pass per model (the unblocked way)."""
    data, valid = store.feature_set("clustered").read()
    probs = []
    with torch.no_grad():
        for state in res.model_states:
            m = build_head(res.config, 16, CLASSES).eval()
            m.load_state_dict(state)
            probs.append(torch.sigmoid(m(torch.from_numpy(data), torch.from_numpy(valid))).numpy())  # (N, C)
    return probs


@pytest.mark.parametrize("folds", [0, 2])
def test_blocks_of_777_rows_equal_the_whole_store(store, folds, monkeypatch):
    monkeypatch.setattr(heads.trainer, "PREDICT_BLOCK_ROWS", 777)  # not a chunk multiple: blocks split chunks
    cfg = TrainConfig(**FAST, folds=folds)
    res = train_head(store, cfg, run_name=f"blocked{folds}", progress=False)
    scores, attrs = store.read_predictions(f"blocked{folds}")
    fold = store.read_prediction_folds(f"blocked{folds}")
    probs = _whole(store, res)
    train, val, test = (store.split_rows(s) for s in ("train", "val", "test"))
    want = np.mean(probs, axis=0)  # (N, C): val/test rows average the fold models
    if folds:
        for j in range(folds):
            own = train[fold[train] == j]
            assert len(own) > N // 5
            want[own] = probs[j][own]
        assert (np.delete(fold, train) == -1).all()
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
    labels = store.labels()
    for split, rows in (("val", val), ("test", test)) + ((("train_oof", train),) if folds else ()):
        expected = evaluate(want[rows], labels[rows])
        for k, v in expected.items():
            assert res.metrics[split][k] == pytest.approx(v, abs=1e-4)
            assert attrs["metrics"][split][k] == pytest.approx(v, abs=1e-4)
    for j, f in enumerate(res.metrics["folds"]):  # each model's own val scores (the average without folds)
        own_val = evaluate((probs[j] if folds else want)[val], labels[val])
        assert f["val"]["class_map"] == pytest.approx(own_val["class_map"], abs=1e-4)
    assert res.metrics["val"]["class_map"] > 0.2  # chance ~0.11: the head learned, the comparison is not of noise
