"""Losses against brute-force (B, C, C) references in float64: values and gradients."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from heads import losses
from heads.losses import (
    ThresholdHead,
    _warp_from_draws,
    class_weights,
    get_loss,
    list_losses,
    predict_labels,
    register_loss,
    threshold_loss,
)

ATOL = 1e-8
ALL = ["bce", "focal", "focal_lc", "label_correlation", "lsep", "scaled_bce", "warp"]


def _case(seed: int, soft: bool, batch: int = 7, classes: int = 6):
    """Float64 logits, targets with an all-negative and an all-positive row, class weights."""
    g = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(batch, classes, generator=g, dtype=torch.float64)
    hard = (torch.rand(batch, classes, generator=g) < 0.4).double()
    hard[0], hard[1] = 0.0, 1.0
    if soft:  # mixup of two hard label sets
        other = (torch.rand(batch, classes, generator=g) < 0.4).double()
        lam = torch.rand(batch, 1, generator=g, dtype=torch.float64)
        hard = lam * hard + (1 - lam) * other
        hard[0] = 0.0
    weight = 0.5 + torch.rand(classes, generator=g, dtype=torch.float64)
    return logits, hard, weight


def _pair_sums(logits, targets, weight, scale=1.0):
    """sum_{p,n} t_p (1-t_n) c_p c_n exp(scale (s_n - s_p)) per sample, on a (B, C, C) tensor."""
    w = targets[:, :, None] * (1 - targets[:, None, :]) * weight[:, None] * weight[None, :]
    diff = logits[:, None, :] - logits[:, :, None]  # [b, p, n] = s_n - s_p
    return (w * torch.exp(scale * diff)).sum(dim=(1, 2))


def brute_lsep(logits, targets, weight):
    return torch.log1p(_pair_sums(logits, targets, weight)).mean()


def brute_label_correlation(logits, targets, weight, scale=1.0):
    n_pairs = targets.sum(1) * (1 - targets).sum(1)
    per = _pair_sums(logits, targets, weight, scale) / torch.where(n_pairs > 0, n_pairs, 1.0)
    return per.mean()


def brute_focal(logits, targets, weight, alpha, gamma):
    p = torch.sigmoid(logits)
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    pos = -a_pos * (1 - p) ** gamma * torch.log(p)
    neg = -a_neg * p**gamma * torch.log(1 - p)
    return (weight * (targets * pos + (1 - targets) * neg)).mean()


def brute_bce(logits, targets, weight):
    p = torch.sigmoid(logits)
    return (-weight * (targets * torch.log(p) + (1 - targets) * torch.log(1 - p))).mean()


def _value_and_grad(fn, logits, *args):
    x = logits.clone().requires_grad_(True)
    value = fn(x, *args)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def _assert_same(fn_a, fn_b, logits, *args):
    va, ga = _value_and_grad(fn_a, logits, *args)
    vb, gb = _value_and_grad(fn_b, logits, *args)
    torch.testing.assert_close(va, vb, atol=ATOL, rtol=0)
    torch.testing.assert_close(ga, gb, atol=ATOL, rtol=0)


REFERENCES = {
    "bce": (lambda: get_loss("bce"), brute_bce),
    "scaled_bce": (lambda: get_loss("scaled_bce", scale=160.0), lambda *a: 160 * brute_bce(*a)),
    "focal": (
        lambda: get_loss("focal", alpha=0.3, gamma=2.0),
        lambda *a: brute_focal(*a, alpha=0.3, gamma=2.0),
    ),
    "focal_no_alpha_gamma_half": (
        lambda: get_loss("focal", alpha=None, gamma=0.5),
        lambda *a: brute_focal(*a, alpha=None, gamma=0.5),
    ),
    "label_correlation": (
        lambda: get_loss("label_correlation", scale=0.7),
        lambda *a: brute_label_correlation(*a, scale=0.7),
    ),
    "focal_lc": (
        lambda: get_loss("focal_lc", alpha=0.25, gamma=1.0, lc_weight=0.3, lc_scale=0.5),
        lambda *a: (
            brute_focal(*a, alpha=0.25, gamma=1.0) + 0.3 * brute_label_correlation(*a, scale=0.5)
        ),
    ),
    "lsep": (lambda: get_loss("lsep"), brute_lsep),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_matches_brute_force(name, soft, weighted):
    build, reference = REFERENCES[name]
    logits, targets, weight = _case(seed=len(name), soft=soft)
    loss = build()
    if weighted:
        _assert_same(loss, reference, logits, targets, weight)
    else:
        ones = torch.ones_like(weight)
        _assert_same(lambda x, t, _w: loss(x, t), reference, logits, targets, ones)


def test_registry_names_and_errors():
    assert list_losses() == ALL
    assert all(isinstance(get_loss(name), nn.Module) for name in ALL)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("lsep")(losses.LSEPLoss)
    with pytest.raises(KeyError, match="known losses"):
        get_loss("hinge")
    with pytest.raises(TypeError, match="accepts: alpha, gamma"):
        get_loss("focal", beta=1.0)
    with pytest.raises(ValueError, match="gamma"):
        get_loss("focal", gamma=-1.0)


def test_shape_errors_are_clear():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"same shape \(B, C\)"):
        get_loss("bce")(logits, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="class_weights"):
        get_loss("lsep")(logits, torch.zeros(2, 3), torch.ones(4))


def test_scaled_bce_defaults_to_sum_over_classes():
    logits, targets, _ = _case(seed=3, soft=True)
    bce = get_loss("bce")(logits, targets)
    torch.testing.assert_close(get_loss("scaled_bce")(logits, targets), 6 * bce)
    assert get_loss("scaled_bce", scale=160.0)(logits, targets).item() == pytest.approx(160 * bce)


def test_focal_matches_torchvision_on_hard_targets_and_reduces_to_bce():
    logits, targets, _ = _case(seed=4, soft=False)
    ours = get_loss("focal", alpha=0.25, gamma=2.0)(logits, targets)
    torch.testing.assert_close(ours, sigmoid_focal_loss(logits, targets, 0.25, 2.0, "mean"))
    plain = get_loss("focal", alpha=None, gamma=0.0)(logits, targets)
    torch.testing.assert_close(plain, F.binary_cross_entropy_with_logits(logits, targets))


@pytest.mark.parametrize("name", ["bce", "scaled_bce", "focal"])
def test_soft_targets_give_the_mixup_of_losses(name):
    logits, y1, _ = _case(seed=5, soft=False)
    y2 = torch.roll(y1, 1, dims=0)
    loss, lam = get_loss(name), 0.3
    mixed = loss(logits, lam * y1 + (1 - lam) * y2)
    torch.testing.assert_close(mixed, lam * loss(logits, y1) + (1 - lam) * loss(logits, y2))


@pytest.mark.parametrize("name", ["label_correlation", "lsep", "warp", "focal_lc"])
def test_pairwise_losses_are_zero_without_pairs(name):
    logits = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([[0.0] * 5, [1.0] * 5, [0.0] * 5], dtype=torch.float64)
    loss = get_loss(name, **({"alpha": 0.5, "gamma": 0.0} if name == "focal_lc" else {}))
    value = loss(logits, targets)
    value.backward()
    if name == "focal_lc":  # only the focal part remains
        focal = get_loss("focal", alpha=0.5, gamma=0.0)(logits, targets)
        torch.testing.assert_close(value, focal)
    else:
        assert value.item() == 0.0
        assert torch.count_nonzero(logits.grad) == 0


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("magnitude", [50.0, 1000.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_logits_give_finite_values_and_gradients(name, magnitude, dtype):
    g = torch.Generator().manual_seed(0)
    sign = torch.where(torch.rand(8, 6, generator=g) < 0.5, -1.0, 1.0)
    logits = (magnitude * sign).to(dtype).requires_grad_(True)
    targets = (torch.rand(8, 6, generator=g) < 0.5).to(dtype)
    targets[0] = 0.3  # a soft row
    value = get_loss(name, **({"seed": 0} if name == "warp" else {}))(logits, targets)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


def test_lsep_exact_at_extreme_logits():
    logits = torch.tensor([[-1000.0, 1000.0], [1000.0, -1000.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    value = get_loss("lsep")(logits, targets)  # [softplus(2000), softplus(-2000)] -> mean 1000
    value.backward()
    assert value.item() == pytest.approx(1000.0)
    torch.testing.assert_close(logits.grad, torch.tensor([[-0.5, 0.5], [0.0, 0.0]]))


def test_label_correlation_turns_linear_past_max_log():
    targets = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    for margin in (5.0, 12.0):  # per-sample loss exp(margin) for s = [-margin/2, margin/2]
        logits = torch.tensor([[-margin / 2, margin / 2]], dtype=torch.float64)
        capped = get_loss("label_correlation", max_log=10.0)(logits, targets).item()
        exact = get_loss("label_correlation", max_log=None)(logits, targets).item()
        assert exact == pytest.approx(math.exp(margin))
        expected = math.exp(margin) if margin <= 10 else math.exp(10) * (1 + margin - 10)
        assert capped == pytest.approx(expected)


def _brute_warp(logits, targets, weight, draws, margin):
    """Weston et al.'s sampling loop, one positive at a time, with the given uniforms."""
    total = logits.new_zeros(())
    for b in range(logits.shape[0]):
        negs = [c for c in range(logits.shape[1]) if targets[b, c] < 0.5]
        for p in range(logits.shape[1]):
            if targets[b, p] < 0.5 or not negs:
                continue
            for trial in range(min(draws.shape[2], len(negs))):
                n = negs[int(draws[b, p, trial] * len(negs))]
                hinge = margin - logits[b, p] + logits[b, n]
                if hinge > 0:
                    rank = len(negs) // (trial + 1)
                    harmonic = sum(1.0 / j for j in range(1, rank + 1))
                    total = total + harmonic * hinge * weight[p] * weight[n]
                    break
    return total / logits.shape[0]


@pytest.mark.parametrize("n_draws", [1, 3, 10])
def test_warp_matches_the_sampling_loop(n_draws):
    logits, targets, weight = _case(seed=6, soft=True, batch=6, classes=7)
    draws = torch.rand(
        6, 7, n_draws, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    _assert_same(
        lambda x: _warp_from_draws(x, targets, weight, draws, 1.0),
        lambda x: _brute_warp(x, targets, weight, draws, 1.0),
        logits,
    )


def test_warp_forward_uses_its_seeded_generator():
    logits, targets, _ = _case(seed=7, soft=False, batch=5, classes=8)
    draws = torch.rand(5, 8, 4, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    expected = _warp_from_draws(logits, targets, torch.ones(8, dtype=torch.float64), draws, 0.5)
    loss = get_loss("warp", margin=0.5, num_samples=4, seed=11)
    assert loss(logits, targets).item() == pytest.approx(expected.item(), abs=ATOL)
    again = get_loss("warp", margin=0.5, num_samples=4, seed=11)(logits, targets)
    assert again.item() == pytest.approx(expected.item(), abs=ATOL)


def test_warp_deterministic_cases():
    # One positive, one negative: the hinge itself (L(1) = 1).
    logits = torch.tensor([[0.2, 0.5], [2.0, 0.0]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    assert get_loss("warp")(logits, targets).item() == pytest.approx((1.3 + 0.0) / 2)
    # All negatives tie and violate: the first draw violates, rank = N_neg = 4.
    logits = torch.tensor([[0.0, 0.3, 0.3, 0.3, 0.3]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    value = get_loss("warp", seed=3)(logits, targets).item()
    assert value == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) * 1.3)


def test_threshold_loss_is_bce_on_the_difference_and_leaves_scores_alone():
    scores = torch.randn(4, 3, requires_grad=True)
    thresholds = torch.randn(4, 3, requires_grad=True)
    targets = (torch.rand(4, 3) < 0.5).float()
    value = threshold_loss(scores, thresholds, targets)
    expected = F.binary_cross_entropy_with_logits(scores - thresholds, targets)
    torch.testing.assert_close(value, expected)
    value.backward()
    assert scores.grad is None and thresholds.grad is not None
    assert predict_labels(torch.tensor([[0.2, 0.9]]), torch.tensor([0.5, 0.5])).tolist() == [
        [False, True]
    ]


def test_threshold_head_learns_per_class_thresholds():
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(512, 4, generator=g) < 0.5).float()
    offsets = torch.tensor([-2.0, 0.0, 1.0, 3.0])
    scores = offsets + 4.0 * labels + 0.5 * torch.randn(512, 4, generator=g)
    torch.manual_seed(0)
    head = ThresholdHead(1, 4)  # a constant feature: one learned threshold per class
    optimizer = torch.optim.Adam(head.parameters(), lr=0.1)
    features = torch.ones(512, 1)
    for _ in range(300):
        optimizer.zero_grad()
        threshold_loss(scores, head(features), labels).backward()
        optimizer.step()
    thresholds = head(features[:1])[0].detach()
    torch.testing.assert_close(thresholds, offsets + 2.0, atol=0.3, rtol=0)
    accuracy = (predict_labels(scores, head(features)) == labels.bool()).float().mean()
    assert accuracy > 0.99


def test_class_weights():
    labels = np.zeros((16, 4), dtype=np.uint8)
    labels[:4, 0], labels[:1, 1], labels[:, 3] = 1, 1, 1  # counts 4, 1, 0 (-> 1), 16
    linear = class_weights(labels, mode="linear")
    raw = torch.tensor([1 / 4, 1.0, 1.0, 1 / 16])
    torch.testing.assert_close(linear, raw / raw.mean())
    sqrt = class_weights(torch.from_numpy(labels), mode="sqrt")
    torch.testing.assert_close(sqrt, raw.sqrt() / raw.sqrt().mean())
    assert sqrt.dtype == torch.float32 and sqrt.mean().item() == pytest.approx(1.0)
    torch.testing.assert_close(class_weights(labels, mode="none"), torch.ones(4))
    with pytest.raises(ValueError, match="mode"):
        class_weights(labels, mode="log")


def test_pairwise_never_builds_class_by_class_tensors():
    """O(B C): a (B, C) problem with C = 20000 classes runs in small memory."""
    logits = torch.randn(2, 20000)
    targets = torch.zeros(2, 20000)
    targets[:, :3] = 1
    for name in ("lsep", "label_correlation", "warp"):
        assert torch.isfinite(get_loss(name)(logits, targets))
    # the same inputs through itertools on a slice agree with the factorised form
    small = logits[:1, :50].double()
    pairs = itertools.product(range(3), range(3, 50))
    brute = math.log1p(sum(math.exp(small[0, n] - small[0, p]) for p, n in pairs))
    assert get_loss("lsep")(small, targets[:1, :50].double()).item() == pytest.approx(brute)


@pytest.mark.parametrize("name", ALL)
def test_half_precision_logits_are_computed_in_float32(name):
    logits32, targets, _ = _case(seed=8, soft=False)
    logits = logits32.to(torch.bfloat16).requires_grad_(True)
    loss = get_loss(name, **({"seed": 0} if name == "warp" else {}))
    value = loss(logits, targets.float())
    value.backward()
    assert value.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    reference = get_loss(name, **({"seed": 0} if name == "warp" else {}))
    expected = reference(logits.detach().float(), targets.float())
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
