"""Learned decision thresholds for ranking scores, and decision metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_recall_fscore_support

from heads.thresholds import (
    ThresholdModel,
    decision_metrics,
    fit_thresholds,
    fixed_threshold,
)

OFFSETS = np.array([-3.0, -1.0, 1.0, 3.0])


def separable(seed: int = 0, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Class c: negatives near OFFSETS[c] - 1.5, positives near OFFSETS[c] + 1.5 (sd 0.3)."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n, len(OFFSETS))) < 0.3
    scores = OFFSETS + np.where(labels, 1.5, -1.5) + 0.3 * rng.standard_normal(labels.shape)
    return scores, labels


def shifted_per_video(seed: int = 1, n: int = 400, c: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`separable` plus a random shift per video (which LSEP cannot see)."""
    rng = np.random.default_rng(seed)
    labels = rng.random((n, c)) < 0.3
    shift = 2.0 * rng.standard_normal((n, 1))
    noise = 0.3 * rng.standard_normal((n, c))
    return shift + np.linspace(-2, 2, c) + np.where(labels, 1.5, -1.5) + noise, labels


def test_per_class_thresholds_land_in_each_class_gap_and_beat_any_global_cut() -> None:
    scores, labels = separable()
    model = fit_thresholds(scores, labels)
    theta = model.thresholds(scores)
    assert theta.shape == scores.shape and np.all(theta == theta[0])  # constant per class
    for c in range(len(OFFSETS)):
        assert scores[~labels[:, c], c].max() < theta[0, c] < scores[labels[:, c], c].min()
    learned = decision_metrics(model.predict(scores), labels)
    assert learned["macro_f1"] == 1.0 and learned["micro_f1"] == 1.0
    best_global = max(
        decision_metrics(scores > t, labels)["macro_f1"] for t in np.linspace(-6, 6, 121)
    )
    assert best_global < 0.8
    baseline = decision_metrics(fixed_threshold(scores), labels)  # sigmoid(s) > 0.5
    assert baseline["macro_f1"] < 0.7
    assert learned["labels_per_video"] == learned["true_labels_per_video"]


def test_thresholds_from_scores_follow_a_per_video_shift() -> None:
    scores, labels = shifted_per_video()
    per_class = decision_metrics(fit_thresholds(scores, labels).predict(scores), labels)
    model = fit_thresholds(scores, labels, mode="from_scores")
    assert model.weight.shape == (8, 8)
    from_scores = decision_metrics(model.predict(scores), labels)
    assert per_class["macro_f1"] < 0.75 < 0.95 < from_scores["macro_f1"]
    # the thresholds move with the video: adding 1 to every score moves them most of the way
    moved = model.thresholds(scores + 1.0) - model.thresholds(scores)
    assert 0.5 < moved.min() and moved.max() < 1.2


def test_model_is_affine_in_the_scores_and_round_trips() -> None:
    scores, labels = shifted_per_video(n=100, c=3)
    model = fit_thresholds(scores, labels, mode="from_scores", epochs=20)
    np.testing.assert_allclose(model.thresholds(scores), scores @ model.weight.T + model.bias)
    np.testing.assert_array_equal(model.predict(scores), scores > model.thresholds(scores))
    again = ThresholdModel.from_dict(model.to_dict())
    np.testing.assert_array_equal(again.thresholds(scores), model.thresholds(scores))


def test_fitting_is_deterministic_under_a_seed_and_leaves_the_global_rng() -> None:
    scores, labels = shifted_per_video(n=100, c=3)
    state = torch.random.get_rng_state()
    a = fit_thresholds(scores, labels, mode="from_scores", epochs=30, seed=3)
    b = fit_thresholds(scores, labels, mode="from_scores", epochs=30, seed=3)
    c = fit_thresholds(scores, labels, mode="from_scores", epochs=30, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    assert not np.array_equal(a.weight, c.weight)


def test_fixed_threshold_is_sigmoid_above_p() -> None:
    scores = np.array([[-1.0, 0.0, 0.5, 3.0]])
    np.testing.assert_array_equal(fixed_threshold(scores), [[False, False, True, True]])
    p = 0.9  # logit 2.197...
    expected = 1 / (1 + np.exp(-scores)) > p
    np.testing.assert_array_equal(fixed_threshold(scores, p), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decision_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random((50, 7)) < 0.3).astype(np.uint8)
    decisions = rng.random((50, 7)) < 0.35
    labels[:, 2] = 0  # a class without positives
    decisions[:, 4] = False  # a class never predicted
    labels[0, 0] = 1
    got = decision_metrics(decisions, labels)
    for average in ("micro", "macro"):
        p, r, f, _ = precision_recall_fscore_support(
            labels, decisions, average=average, zero_division=0
        )
        assert got[f"{average}_precision"] == pytest.approx(p, abs=1e-12)
        assert got[f"{average}_recall"] == pytest.approx(r, abs=1e-12)
        assert got[f"{average}_f1"] == pytest.approx(f, abs=1e-12)
    assert got["labels_per_video"] == pytest.approx(decisions.sum() / 50)
    assert got["true_labels_per_video"] == pytest.approx(labels.sum() / 50)


def test_decision_metrics_hand_computed() -> None:
    labels = np.array([[1, 0], [1, 1], [0, 0]])
    decisions = np.array([[1, 1], [0, 1], [0, 0]])
    got = decision_metrics(decisions, labels)
    # class 0: tp 1, fp 0, fn 1; class 1: tp 1, fp 1, fn 0
    assert got["macro_precision"] == pytest.approx((1.0 + 0.5) / 2)
    assert got["macro_recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert got["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert got["micro_precision"] == pytest.approx(2 / 3)
    assert got["micro_f1"] == pytest.approx(2 / 3)
    assert got["labels_per_video"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s, y: fit_thresholds(s[:, :3], y), "same shape"),
        (lambda s, y: fit_thresholds(s, 2 * y.astype(int)), "labels must be 0/1"),
        (lambda s, y: fit_thresholds(s, y, mode="mlp"), "mode must be one of"),
        (lambda s, y: fit_thresholds(s, y, epochs=0), "epochs and lr must be positive"),
        (lambda s, y: fit_thresholds(np.where(y, np.inf, s), y), "inf"),
        (lambda s, y: decision_metrics(s, y), "decisions must be bool or 0/1"),
        (lambda s, y: decision_metrics(y[:5], y), "same shape"),
        (lambda s, y: fixed_threshold(s, 1.0), r"probability must be in \(0, 1\)"),
        (lambda s, y: fit_thresholds(s, y, epochs=1).predict(s[:, :2]), "fitted on 4 classes"),
        (lambda s, y: ThresholdModel("per_class", np.zeros((4, 4)), np.zeros(4)), "weight"),
    ],
)
def test_bad_input_is_a_one_line_value_error(call, match: str) -> None:
    scores, labels = separable(n=20)
    with pytest.raises(ValueError, match=match) as info:
        call(scores, labels)
    assert "\n" not in str(info.value)
