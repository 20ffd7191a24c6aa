"""The fusion methods: registry, shared contract, and what each must achieve."""

import json
import re

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from fusion import get_fusion, list_fusions, register_fusion
from fusion.errors import FusionError, UnknownMethod
from fusion.inputs import StackInputs
from fusion.mean import MeanFusion
from fusion.xgb import XGBSettings, screen_other_scores
from heads.metrics import class_map


def test_registry_lists_every_method_and_refuses_twins():
    assert list_fusions() == ["logistic", "mean", "weighted", "xgboost"]
    with pytest.raises(ValueError, match="registered twice"):
        register_fusion("mean")(MeanFusion)
    with pytest.raises(UnknownMethod, match="choose one of logistic, mean"):
        get_fusion("stacking")
    with pytest.raises(FusionError, match="unknown setting.*max_dept\\b"):
        get_fusion("xgboost", {"max_dept": 3})
    with pytest.raises(FusionError, match=r"\[xgboost\] table of --config\): unknown setting.*max_dept\b"):
        get_fusion("xgboost", {"max_dept": 3})
    with pytest.raises(FusionError, match=re.escape("valid_fraction must be in (0, 1), got 1.0")):
        XGBSettings(valid_fraction=1.0)
    with pytest.raises(FusionError,
                       match=re.escape("--max-depth / max_depth must be >= 1, got 0; --rounds / n_rounds")):
        XGBSettings(max_depth=0, n_rounds=0)
    assert XGBSettings.from_dict(XGBSettings(max_depth=4).to_dict()) == XGBSettings(max_depth=4)


@pytest.mark.parametrize("name", list_fusions())
def test_every_method_keeps_the_contract(name, problem):
    syn, x, train, test = problem
    fuser = get_fusion(name, {"n_rounds": 20} if name == "xgboost" else None)
    if fuser.needs_fit:
        with pytest.raises(FusionError, match="not fitted"):
            fuser.predict(x.take(test))
    fuser.fit(x.take(train), syn.labels[train])
    p = fuser.predict(x.take(test))
    assert p.shape == (len(test), 16) and p.dtype == np.float32
    assert np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1
    rel = fuser.reliance(x.take(test))
    assert rel.shape == (16, 3) and np.allclose(rel.sum(axis=1), 1) and rel.min() >= 0
    json.dumps(fuser.record())
    if fuser.needs_fit:
        with pytest.raises(FusionError, match="fitted on runs"):
            fuser.predict(StackInputs(x.probs[:5, ::-1], x.available[:5, ::-1], x.names[::-1]))


def test_mean_averages_available_runs_by_hand():
    probs = np.array([[[0.2, 0.4], [0.6, 0.8], [0.9, 0.1]]], np.float32)
    x = StackInputs(probs, np.array([[True, True, False]]), ("a", "b", "c"))
    np.testing.assert_allclose(get_fusion("mean").predict(x), [[0.4, 0.6]], rtol=1e-6)


def _mixture(weights_per_class, n=4000, seed=1):
    rng = np.random.default_rng(seed)
    c = len(weights_per_class)
    a, b = (1 / (1 + np.exp(-rng.normal(-1.0, 1.5, size=(n, c)))) for _ in range(2))
    w = np.asarray(weights_per_class)
    truth = w[:, 0] * a + w[:, 1] * b  # the labels really are drawn from 0.7 A + 0.3 B
    y = (rng.random((n, c)) < truth).astype(np.uint8)
    return StackInputs(np.stack([a, b], axis=1).astype(np.float32), np.ones((n, 2), bool), ("a", "b")), y


def test_weighted_recovers_known_weights():
    x, y = _mixture([[0.7, 0.3]] * 5)
    w = get_fusion("weighted").fit(x, y).record()["weights"]
    assert abs(w["a"] - 0.7) < 0.1 and abs(w["b"] - 0.3) < 0.1 and abs(w["a"] + w["b"] - 1) < 1e-6


def test_weighted_per_class_recovers_each_class_weights():
    x, y = _mixture([[0.9, 0.1], [0.2, 0.8]], n=8000)
    w = np.asarray(get_fusion("weighted", {"per_class": True}).fit(x, y).record()["weights"]["a"])
    np.testing.assert_allclose(w, [0.9, 0.2], atol=0.1)
    shared = get_fusion("weighted").fit(x, y).record()["weights"]["a"]
    assert 0.3 < shared < 0.8  # one vector for both classes cannot be right for either


def test_logistic_equals_scikit_learn_on_the_class_features(problem):
    syn, x, train, test = problem
    fuser = get_fusion("logistic").fit(x.take(train), syn.labels[train])
    c = 13
    feats = np.concatenate([x.filled_logits()[:, :, c], x.available.astype(np.float32)], axis=1)
    mu, sd = feats[train].mean(0), feats[train].std(0)
    sd[sd == 0] = 1
    ref = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-8)  # converged, as our Newton is
    ref.fit((feats[train] - mu) / sd, syn.labels[train, c])
    want = ref.predict_proba((feats[test] - mu) / sd)[:, 1]
    np.testing.assert_allclose(fuser.predict(x.take(test))[:, c], want, rtol=1e-4, atol=1e-6)


def test_screening_finds_the_informative_other_class():
    rng = np.random.default_rng(0)
    n, m, c = 2000, 2, 5
    labels = (rng.random((n, c)) < 0.2).astype(np.uint8)
    logits = rng.standard_normal((n, m, c)).astype(np.float32)
    logits[:, 1, 3] += 3 * labels[:, 0]  # run 1's score of class 3 tells about class 0
    other = screen_other_scores(logits, labels, k=2)
    assert other.shape == (c, 2) and other[0, 0] == 1 * c + 3
    own = np.arange(m)[:, None] * c + np.arange(c)  # (M, C) flat index of each own column
    assert not any(np.isin(other[k], own[:, k]).any() for k in range(c))
    assert screen_other_scores(logits, labels, k=-1).shape == (c, m * (c - 1))


def _map(p, syn, rows, classes=None):
    r = class_map(p, syn.labels[rows]).per_class
    return float(np.nanmean(r if classes is None else r[classes]))


def test_xgboost_beats_every_input_the_mean_and_the_linear_stacker_on_interactions(problem):
    syn, x, train, test = problem
    xt = x.take(test)
    fused = get_fusion("xgboost").fit(x.take(train), syn.labels[train]).predict(xt)
    xgb_map = _map(fused, syn, test)
    for m in range(3):
        assert xgb_map > _map(xt.single(m), syn, test) + 0.2
    assert xgb_map > _map(get_fusion("mean").predict(xt), syn, test) + 0.05
    pair = np.flatnonzero(syn.family == "action_direction")
    linear = get_fusion("logistic").fit(x.take(train), syn.labels[train]).predict(xt)
    assert _map(fused, syn, test, pair) > _map(linear, syn, test, pair) + 0.01


@pytest.mark.parametrize("settings", [{"linear_base": False}, {"other_scores": -1, "availability": False},
                                      {"other_scores": 0, "n_jobs": 1, "max_depth": 2}])
def test_xgboost_variants_fuse(settings, problem):
    syn, x, train, test = problem
    fuser = get_fusion("xgboost", settings).fit(x.take(train), syn.labels[train])
    xt = x.take(test)
    assert _map(fuser.predict(xt), syn, test) > _map(get_fusion("mean").predict(xt), syn, test)
    rel = fuser.reliance(xt)
    sound = np.flatnonzero(syn.family == "sound")
    assert (rel[sound].argmax(axis=1) == 2).all()  # sound classes rely on audio
