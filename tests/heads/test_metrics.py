"""Metrics against scikit-learn and brute-force definitions, on inputs full of ties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score

from heads import metrics
from heads.metrics import (
    class_map,
    evaluate,
    gap,
    hit_at_1,
    per_class_ap_table,
    perr,
    sample_map,
    top_k_accuracy,
)


def _data(seed: int, n: int = 60, c: int = 9, decimals: int | None = 1):
    """Scores rounded to ``decimals`` (many ties), a class and a video without positives."""
    rng = np.random.default_rng(seed)
    scores = rng.random((n, c))
    if decimals is not None:
        scores = np.round(scores, decimals)
    labels = (rng.random((n, c)) < 0.25 + 0.4 * scores).astype(np.uint8)
    labels[:, 2] = 0
    labels[5] = 0
    return scores, labels


def _sklearn_ap(labels, scores):
    return average_precision_score(labels, scores) if labels.any() else np.nan


def test_hand_computed_average_precision():
    s = np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.5, 0.1, 0.0]])
    y = np.array([[1, 0, 1, 0], [1, 0, 1, 0]])
    per_video = sample_map(s, y).per_sample
    # (1 + 2/3) / 2, and with the tie at 0.5 as one step: (1/2 + 2/3) / 2
    np.testing.assert_allclose(per_video, [5 / 6, 7 / 12], rtol=0, atol=1e-15)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("decimals", [1, 2, None])
def test_class_map_matches_sklearn(seed, decimals):
    scores, labels = _data(seed, decimals=decimals)
    result = class_map(scores, labels)
    expected = np.array([_sklearn_ap(labels[:, c], scores[:, c]) for c in range(labels.shape[1])])
    np.testing.assert_allclose(result.per_class, expected, rtol=0, atol=1e-12)
    assert np.isnan(result.per_class[2]) and result.n_skipped == 1
    assert result.value == pytest.approx(np.nanmean(expected), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_sample_map_matches_sklearn_per_row(seed):
    scores, labels = _data(seed)
    result = sample_map(scores, labels)
    expected = np.array([_sklearn_ap(labels[i], scores[i]) for i in range(len(labels))])
    np.testing.assert_allclose(result.per_sample, expected, rtol=0, atol=1e-12)
    assert result.n_skipped == int((labels.sum(1) == 0).sum()) >= 1
    assert result.value == pytest.approx(np.nanmean(expected), abs=1e-12)
    assert not math.isnan(result.value)


def test_blocked_ap_equals_single_block(monkeypatch):
    scores, labels = _data(7, n=50)
    whole = class_map(scores, labels).per_class, sample_map(scores, labels).per_sample
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 40)  # blocks of 1 or few rows
    np.testing.assert_array_equal(class_map(scores, labels).per_class, whole[0])
    np.testing.assert_array_equal(sample_map(scores, labels).per_sample, whole[1])


def test_torch_inputs_equal_numpy():
    scores, labels = _data(1)
    ours = evaluate(torch.from_numpy(scores).float(), torch.from_numpy(labels).bool())
    assert ours == evaluate(scores.astype(np.float32), labels)


def _brute_gap(scores, labels, top_k):
    """YouTube-8M GAP: pool each video's top-k (ties by class id), rank, AP over all positives."""
    pool = []
    for s, y in zip(scores.tolist(), labels.tolist()):
        kept = sorted(range(len(s)), key=lambda c: (-s[c], c))[:top_k]
        pool += [(s[c], y[c]) for c in kept]
    total, ap = labels.sum(), 0.0
    for threshold in sorted({score for score, _ in pool}, reverse=True):
        at_or_above = [hit for score, hit in pool if score >= threshold]
        new_hits = sum(hit for score, hit in pool if score == threshold)
        ap += new_hits * sum(at_or_above) / len(at_or_above) / total
    return ap


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("top_k", [1, 3, 20])
@pytest.mark.parametrize("decimals", [1, None])
def test_gap_matches_brute_force(seed, top_k, decimals):
    scores, labels = _data(seed, decimals=decimals)
    assert gap(scores, labels, top_k=top_k) == pytest.approx(
        _brute_gap(scores, labels, top_k), abs=1e-12
    )


def test_gap_without_ties_is_precision_at_each_hit():
    scores, labels = _data(3, decimals=None)
    top = np.argsort(-scores, axis=1)[:, :4]
    pooled = sorted(
        ((scores[i, c], labels[i, c]) for i in range(len(scores)) for c in top[i]), reverse=True
    )
    hits = np.cumsum([h for _, h in pooled])
    expected = sum(hits[i] / (i + 1) for i, (_, h) in enumerate(pooled) if h) / labels.sum()
    assert gap(scores, labels, top_k=4) == pytest.approx(expected, abs=1e-12)


def test_gap_over_all_classes_is_micro_average_precision():
    scores, labels = _data(2)
    expected = average_precision_score(labels.ravel(), scores.ravel())
    assert gap(scores, labels, top_k=labels.shape[1]) == pytest.approx(expected, abs=1e-12)


def _tie_orders(row):
    """Every descending order of the classes of one row: all ways to break its ties."""
    return [
        p
        for p in itertools.permutations(range(len(row)))
        if all(row[a] >= row[b] for a, b in itertools.pairwise(p))
    ]


def _brute_expectation(scores, labels, metric):
    """Mean over videos with a positive of the metric averaged over all tie-breaking orders."""
    values = [
        np.mean([metric(order, y) for order in _tie_orders(s)])
        for s, y in zip(scores.tolist(), labels.tolist())
        if any(y)
    ]
    return float(np.mean(values))


def _tiny(seed):
    rng = np.random.default_rng(seed)
    scores = rng.choice([0.0, 0.5, 1.0], size=(40, 5))
    labels = (rng.random((40, 5)) < 0.35).astype(int)
    labels[0] = 0
    return scores, labels


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_top_k_accuracy_is_expected_hit_over_tie_orders(seed, k):
    scores, labels = _tiny(seed)
    expected = _brute_expectation(scores, labels, lambda o, y: float(any(y[c] for c in o[:k])))
    assert top_k_accuracy(scores, labels, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_perr_is_expected_precision_over_tie_orders(seed):
    scores, labels = _tiny(seed)
    expected = _brute_expectation(
        scores, labels, lambda o, y: sum(y[c] for c in o[: sum(y)]) / sum(y)
    )
    assert perr(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_hit_and_perr_without_ties_follow_youtube8m():
    scores, labels = _data(4, decimals=None)
    rows = labels.sum(1) > 0
    s, y = scores[rows], labels[rows]
    top = np.argmax(s, 1)
    assert hit_at_1(scores, labels) == pytest.approx(y[np.arange(len(y)), top].mean())
    precisions = []
    for i in range(len(y)):
        r = int(y[i].sum())
        precisions.append(y[i][np.argpartition(s[i], -r)[-r:]].sum() / r)
    assert perr(scores, labels) == pytest.approx(np.mean(precisions))


def test_per_class_ap_table():
    scores, labels = _data(0)
    names = [f"class_{c}" for c in range(labels.shape[1])]
    table = per_class_ap_table(scores, labels, names)
    assert isinstance(table, pd.DataFrame) and list(table.columns) == ["class", "ap", "n_positives"]
    assert table["class"].tolist() == names
    np.testing.assert_array_equal(table["ap"].to_numpy(), class_map(scores, labels).per_class)
    np.testing.assert_array_equal(table["n_positives"].to_numpy(), labels.sum(0))
    with pytest.raises(ValueError, match="class names"):
        per_class_ap_table(scores, labels, names[:-1])


def test_evaluate_returns_plain_floats():
    scores, labels = _data(5)
    result = evaluate(scores, labels)
    assert list(result) == ["class_map", "sample_map", "gap20", "hit1", "perr", "top1", "top5"]
    assert all(type(v) is float and 0.0 <= v <= 1.0 for v in result.values())
    assert result["hit1"] == result["top1"]
    assert result["class_map"] == class_map(scores, labels).value


def test_bad_inputs_raise_clear_errors():
    scores, labels = _data(0)
    with pytest.raises(ValueError, match="same shape"):
        class_map(scores, labels[:, :-1])
    with pytest.raises(ValueError, match="NaN"):
        class_map(np.where(scores > 0.5, np.nan, scores), labels)
    with pytest.raises(ValueError, match="0/1"):
        sample_map(scores, labels * 0.5)
    with pytest.raises(ValueError, match="no positive"):
        gap(scores, np.zeros_like(labels))
    with pytest.raises(ValueError, match="k must be"):
        top_k_accuracy(scores, labels, 0)


@pytest.mark.parametrize("decimals", [2, None])
def test_float32_scores_are_scored_as_they_are(decimals):
    scores, labels = _data(3, n=80, decimals=decimals)
    s32 = scores.astype(np.float32)  # ties and order of float32 values are those of their float64 copies
    expected = np.array([_sklearn_ap(labels[:, c], s32[:, c].astype(np.float64)) for c in range(labels.shape[1])])
    np.testing.assert_allclose(class_map(s32, labels).per_class, expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(class_map(torch.from_numpy(s32), labels).per_class, class_map(s32, labels).per_class)
    s, y = metrics._prepare(s32, labels)
    assert s.dtype == np.float32 and np.shares_memory(s, s32)  # no copy of the scores
    assert y.dtype == bool and np.shares_memory(y, labels)  # 0/1 bytes viewed as bool


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, bool])
def test_label_dtypes_agree_and_non_binary_labels_raise(dtype):
    scores, labels = _data(4, n=40)
    assert evaluate(scores, labels.astype(dtype)) == evaluate(scores, labels.astype(bool))
    if dtype is not bool:
        bad = labels.astype(dtype)
        bad[3, 4] = 2 if dtype is not np.float32 else 0.5
        with pytest.raises(ValueError, match="0/1"):
            class_map(scores, bad)


def test_metrics_work_in_blocks_without_copying_the_scores(monkeypatch):
    import tracemalloc

    rng = np.random.default_rng(0)
    scores = rng.random((20_000, 64), dtype=np.float32)
    labels = (rng.random((20_000, 64)) < 0.1).astype(np.uint8)
    whole = [class_map(scores, labels).per_class, sample_map(scores, labels).per_sample,
             top_k_accuracy(scores, labels, 5), perr(scores, labels)]
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 4096)
    tracemalloc.start()
    try:
        blocked = [class_map(scores, labels).per_class, sample_map(scores, labels).per_sample,
                   top_k_accuracy(scores, labels, 5), perr(scores, labels)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(blocked[0], whole[0])
    np.testing.assert_array_equal(blocked[1], whole[1])
    assert blocked[2] == pytest.approx(whole[2], rel=1e-12) and blocked[3] == pytest.approx(whole[3], rel=1e-12)
    assert peak < scores.nbytes / 4, f"peak {peak} bytes for {scores.nbytes} bytes of scores"
