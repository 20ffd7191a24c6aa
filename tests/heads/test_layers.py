"""Tests of the pooling heads: every registered head, exact masking, hand-computed cases."""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heads._masking import MaskedBatchNorm1d, prepare_clips
from heads.gating import ContextGating, SEContextGating
from heads.lstm import LSTMPooling, valid_clips_first
from heads.moe import MixtureOfExperts, make_classifier
from heads.netvlad import NetRVLAD, NetVLAD, SoftDBoF
from heads.nonlocal_block import NonLocalBlock
from heads.registry import get_head, get_head_builder, list_heads, register_head

torch.set_num_threads(1)

D, C = 8, 3
# small sizes for every builder keyword a head may accept; unknown ones are filtered out
SMALL = {"num_clusters": 4, "lstm_size": 8, "hidden_dim": 16, "inner_dim": 4, "dropout": 0.0}
EXPECTED = {"mean_mlp", "max_mlp", "lstm", "bilstm", "netvlad", "netrvlad", "softdbof",
            "nextvlad", "nonlocal_netvlad", "nonlocal_nextvlad", "nonlocal_lstm",
            "nonlocal_bilstm"}


def build(name: str, seed: int = 0, **kw: object) -> nn.Module:
    params = inspect.signature(get_head_builder(name)).parameters
    kwargs = {k: v for k, v in {**SMALL, **kw}.items() if k in params}
    torch.manual_seed(seed)
    return get_head(name, in_dim=D, num_classes=C, **kwargs)


def batch(seed: int = 0, b: int = 4, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip features with holes in the mask (not a prefix) and garbage in the holes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, k, D, generator=g)
    mask = torch.ones(b, k, dtype=torch.bool)
    mask[1, [1, 4]] = False
    mask[2, [0, 2, 3]] = False
    mask[3, 3:] = False
    x = torch.where(mask.unsqueeze(-1), x, 1e3 * torch.randn(b, k, D, generator=g))
    return x, mask


def insert_garbage(x: torch.Tensor, mask: torch.Tensor, extra: int, seed: int = 1):
    """Insert ``extra`` padded clips per video at random places (NaN, inf and huge values)."""
    g = torch.Generator().manual_seed(seed)
    b, k, d = x.shape
    xp = 1e4 * torch.randn(b, k + extra, d, generator=g)
    xp[0, 0, 0], xp[-1, -1, -1] = float("nan"), float("inf")
    mp = torch.zeros(b, k + extra, dtype=torch.bool)
    for row in range(b):
        keep = torch.randperm(k + extra, generator=g)[:k].sort().values
        xp[row, keep], mp[row, keep] = x[row], mask[row]
    # the NaN / inf above may have been overwritten by kept clips; force them into padding
    pad = (~mp).nonzero()
    xp[pad[0, 0], pad[0, 1], 0] = float("nan")
    xp[pad[-1, 0], pad[-1, 1], 1] = float("-inf")
    return xp, mp


def randomise_bn(module: nn.Module, seed: int = 3) -> None:
    """Give every BN layer a non-zero random scale and shift (the non-local gamma starts at 0)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm1d | MaskedBatchNorm1d):
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))


# ----------------------------------------------------------------------------------- registry


def test_registry_lists_the_issue_heads():
    assert EXPECTED <= set(list_heads())


def test_registering_a_name_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_head("netvlad")(lambda **kw: nn.Identity())


def test_get_head_errors_tell_what_to_do():
    with pytest.raises(KeyError, match="known heads"):
        get_head("no_such_head", in_dim=D, num_classes=C)
    with pytest.raises(TypeError, match="accepts"):
        get_head("mean_mlp", in_dim=D, num_classes=C, num_clusters=4)
    with pytest.raises(ValueError, match="logistic"):
        get_head("mean_mlp", in_dim=D, num_classes=C, classifier="svm")
    with pytest.raises(ValueError, match="divide"):
        get_head("nextvlad", in_dim=5, num_classes=C, groups=3, expansion=1)
    head = build("mean_mlp")
    with pytest.raises(ValueError, match="in_dim"):
        head(torch.zeros(2, 3, D + 1))
    with pytest.raises(ValueError, match="bool"):
        head(torch.zeros(2, 3, D), torch.ones(2, 3))


# ------------------------------------------------------------------------- every head, generic


@pytest.mark.parametrize("gating", [True, False])
@pytest.mark.parametrize("classifier", ["logistic", "moe"])
@pytest.mark.parametrize("name", list_heads())
def test_head_shapes_gradients_and_no_nan(name, classifier, gating):
    head = build(name, classifier=classifier, gating=gating)
    x, mask = batch()
    xp, mp = insert_garbage(x, mask, extra=2)
    logits = head(xp, mp)
    assert logits.shape == (4, C) and torch.isfinite(logits).all()
    # at init (non-local gamma = 0) every parameter already gets a finite gradient
    F.binary_cross_entropy_with_logits(logits, torch.rand(4, C).round()).backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    # with every BN scale non-zero, every parameter gets a non-zero gradient
    head.zero_grad()
    randomise_bn(head)
    F.binary_cross_entropy_with_logits(head(xp, mp), torch.rand(4, C).round()).backward()
    for pname, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"
    head.eval()
    with torch.no_grad():
        features = head.forward_features(x, mask)
        assert features.shape == (4, head.feature_dim) and torch.isfinite(features).all()
        torch.testing.assert_close(head.forward_head(features), head(x, mask))
        full = torch.ones_like(mask)
        torch.testing.assert_close(head(x, None), head(x, full))


@pytest.mark.parametrize("name", list_heads())
def test_video_without_valid_clips_gives_finite_logits(name):
    head = build(name)
    x, mask = batch()
    mask[0] = False
    logits = head(x, mask)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("mode", ["train", "train_dropout", "eval"])
@pytest.mark.parametrize("name", list_heads())
def test_masking_is_exact(name, mode):
    """Inserting padded garbage anywhere changes neither the logits nor the BN statistics.

    In training the batch statistics of every BN layer must be those of the valid clips; with
    dropout the same seed must draw the same dropout masks (their shapes do not depend on K).
    """
    head = build(name, classifier="moe", gating=True, num_layers=2,
                 dropout=0.3 if mode == "train_dropout" else 0.0)
    randomise_bn(head)
    with torch.no_grad():  # populate the running statistics
        head(*batch(seed=7, b=6, k=6))
    a, b = copy.deepcopy(head), copy.deepcopy(head)
    a.train(mode != "eval")
    b.train(mode != "eval")
    x, mask = batch()
    xp, mp = insert_garbage(x, mask, extra=3)
    torch.manual_seed(11)
    out_a = a(x, mask)
    torch.manual_seed(11)
    out_b = b(xp, mp)
    torch.testing.assert_close(out_b, out_a, atol=1e-5, rtol=1e-5)
    torch.manual_seed(12)
    features_a = a.forward_features(x, mask)
    torch.manual_seed(12)
    torch.testing.assert_close(b.forward_features(xp, mp), features_a, atol=1e-5, rtol=1e-5)
    state_b = b.state_dict()
    for key, buf_a in a.state_dict().items():  # running statistics, num_batches_tracked
        torch.testing.assert_close(state_b[key], buf_a, atol=1e-6, rtol=1e-5, msg=key)
    if mode == "eval":  # each video alone, without any padding, gives its row of the batch
        with torch.no_grad():
            for row in range(x.shape[0]):
                alone = a(x[row : row + 1, mask[row]], None)
                torch.testing.assert_close(alone[0], out_a[row], atol=1e-5, rtol=1e-5)


def separable_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels linearly separable in the mean of the valid clips; garbage in the padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, D, generator=g)
    mask = torch.rand(n, 4, generator=g) < 0.75
    mask[:, 0] = True
    x = torch.where(mask.unsqueeze(-1), x, 50 * torch.randn(n, 4, D, generator=g))
    mean = torch.where(mask.unsqueeze(-1), x, 0.0).sum(1) / mask.sum(1, keepdim=True)
    w = torch.randn(D, C, generator=torch.Generator().manual_seed(1234))
    return x, mask, (mean @ w > 0).float()


@pytest.mark.parametrize("name", ["mean_mlp", "netvlad", "nonlocal_nextvlad"])
def test_head_learns_a_linearly_separable_multilabel_task(name):
    x, mask, labels = separable_task(256, seed=0)
    head = build(name, hidden_dim=32)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(150):
        optimiser.zero_grad()
        loss = F.binary_cross_entropy_with_logits(head(x, mask), labels)
        loss.backward()
        optimiser.step()
    head.eval()
    x_test, mask_test, labels_test = separable_task(512, seed=1)
    with torch.no_grad():
        train_acc = ((head(x, mask) > 0).float() == labels).float().mean()
        test_acc = ((head(x_test, mask_test) > 0).float() == labels_test).float().mean()
    assert train_acc > 0.95 and test_acc > 0.8, f"{name}: {train_acc:.3f} / {test_acc:.3f}"


# ------------------------------------------------------------------------- masked batch norm


def test_masked_batchnorm_matches_batchnorm_on_valid_rows():
    x, mask = batch()
    masked, plain = MaskedBatchNorm1d(D), nn.BatchNorm1d(D)
    randomise_bn(masked)
    plain.load_state_dict(masked.state_dict())
    for _ in range(2):  # training: batch statistics over valid clips, running stats updated
        out = masked(x, mask)
        torch.testing.assert_close(out[mask], plain(x[mask]))
        assert (out[~mask] == 0).all()
        torch.testing.assert_close(masked.running_mean, plain.running_mean)
        torch.testing.assert_close(masked.running_var, plain.running_var)
    assert masked.num_batches_tracked == plain.num_batches_tracked == 2
    masked.eval(), plain.eval()
    torch.testing.assert_close(masked(x, mask)[mask], plain(x[mask]))
    masked.train(), plain.train()  # gradients equal too, and none reaches the padding
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    masked(xa, mask)[mask].pow(3).sum().backward()
    plain(xb[mask]).pow(3).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(masked.weight.grad, plain.weight.grad)
    assert (xa.grad[~mask] == 0).all()


def test_masked_batchnorm_ignores_an_all_padded_batch():
    bn = MaskedBatchNorm1d(3)
    before = copy.deepcopy(bn.state_dict())
    out = bn(torch.randn(2, 4, 3), torch.zeros(2, 4, dtype=torch.bool))
    assert (out == 0).all()
    torch.testing.assert_close(bn.running_mean, before["running_mean"])
    torch.testing.assert_close(bn.running_var, before["running_var"])


def test_prepare_clips_zeroes_padding():
    x, mask = batch()
    clean, m = prepare_clips(x, mask, in_dim=D)
    assert (clean[~mask] == 0).all() and torch.equal(clean[mask], x[mask]) and m is mask


# ------------------------------------------------------------------ hand-computed small cases


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _bn_np(v, bn, stats=None):
    mean, var = stats if stats is not None else (_np(bn.running_mean), _np(bn.running_var))
    return (v - mean) / np.sqrt(var + bn.eps) * _np(bn.weight) + _np(bn.bias)


def _softmax_np(v):
    e = np.exp(v - v.max())
    return e / e.sum()


@pytest.mark.parametrize("training", [False, True])
def test_netvlad_family_against_a_plain_loop(training):
    torch.manual_seed(0)
    d, kc = 3, 2
    x = torch.randn(2, 4, d)
    mask = torch.tensor([[True, False, True, True], [False, True, True, False]])
    vlad, rvlad, dbof = NetVLAD(d, kc), NetRVLAD(d, kc), SoftDBoF(d, kc, max_pool=True)
    for layer in (vlad, rvlad, dbof):
        randomise_bn(layer)
        layer.assign.bn.running_mean.normal_()
        layer.assign.bn.running_var.uniform_(0.5, 2.0)
        layer.train(training)
        bn, w = layer.assign.bn, _np(layer.assign.fc.weight)
        valid = [(b, t) for b in range(2) for t in range(4) if mask[b, t]]
        stats = None
        if training:  # BN statistics over the valid clips only (biased variance)
            logits = np.array([w @ _np(x[b, t]) for b, t in valid])
            stats = (logits.mean(0), logits.var(0))
        got = _np(layer(x, mask))
        for b in range(2):
            a = {t: _softmax_np(_bn_np(w @ _np(x[b, t]), bn, stats)) for bb, t in valid if bb == b}
            if layer is dbof:
                s = sum(a.values())
                mx = np.max(np.stack(list(a.values())), axis=0)
                want = np.concatenate([s / np.linalg.norm(s), mx / np.linalg.norm(mx)])
            else:
                v = np.zeros((kc, d))
                for t, a_t in a.items():
                    for k in range(kc):
                        centre = _np(vlad.centres[k]) if layer is vlad else 0.0
                        v[k] += a_t[k] * (_np(x[b, t]) - centre)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                want = v.reshape(-1) / np.linalg.norm(v)
            np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


def test_context_gating_by_hand():
    torch.manual_seed(0)
    cg = ContextGating(4)
    randomise_bn(cg)
    cg.bn.running_mean.normal_()
    cg.bn.running_var.uniform_(0.5, 2.0)
    cg.eval()
    x = torch.randn(3, 4)
    w = _np(cg.fc.weight)
    want = np.stack([_np(r) / (1 + np.exp(-_bn_np(w @ _np(r), cg.bn))) for r in x])
    np.testing.assert_allclose(_np(cg(x)), want, rtol=1e-5, atol=1e-6)
    cg.train()  # training: batch statistics of W x
    pre = _np(x) @ w.T
    gates = 1 / (1 + np.exp(-_bn_np(pre, cg.bn, (pre.mean(0), pre.var(0)))))
    np.testing.assert_allclose(_np(cg(x)), _np(x) * gates, rtol=1e-5, atol=1e-6)


def test_se_context_gating_by_hand():
    torch.manual_seed(0)
    se = SEContextGating(8, reduction=4)
    randomise_bn(se)
    se.eval()
    x = torch.randn(3, 8)
    hidden = np.maximum(_bn_np(_np(x) @ _np(se.squeeze.weight).T, se.bn), 0)
    gates = 1 / (1 + np.exp(-(hidden @ _np(se.excite.weight).T)))
    np.testing.assert_allclose(_np(se(x)), _np(x) * gates, rtol=1e-5, atol=1e-6)


def test_nonlocal_block_by_hand():
    torch.manual_seed(0)
    d, k = 4, 5
    block = NonLocalBlock(d)
    assert block.inner_dim == 2 and (block.bn.weight == 0).all()
    x = torch.randn(2, k, d)
    mask = torch.tensor([[True, True, False, True, False], [False, True, True, True, True]])
    # zero-initialised BN gamma: the block starts as the identity on valid clips
    torch.testing.assert_close(block(x, mask)[mask], x[mask])
    randomise_bn(block)
    block.bn.running_mean.normal_()
    block.bn.running_var.uniform_(0.5, 2.0)
    block.eval()

    def lin(layer, v):
        return v @ _np(layer.weight).T + _np(layer.bias)

    got, attention = _np(block(x, mask)), _np(block.attention(x, mask))
    for b in range(2):
        xb, valid = _np(x[b]), mask[b].numpy()
        q, kk, g = lin(block.theta, xb), lin(block.phi, xb), lin(block.g, xb)
        scores = q @ kk.T / np.sqrt(2)
        scores[:, ~valid] = -np.inf
        f = np.exp(scores - scores.max(1, keepdims=True))
        f /= f.sum(1, keepdims=True)
        np.testing.assert_allclose(attention[b], f, rtol=1e-5, atol=1e-6)
        z = _bn_np(lin(block.out, f @ g), block.bn) + xb
        np.testing.assert_allclose(got[b][valid], z[valid], rtol=1e-5, atol=1e-6)
        assert (got[b][~valid] == 0).all()


def test_mixture_of_experts_by_hand():
    torch.manual_seed(0)
    moe = MixtureOfExperts(5, 3, num_experts=2)
    x = torch.randn(4, 5)
    gates = _np(moe.gates(x)).reshape(4, 3, 3)
    gates = np.exp(gates) / np.exp(gates).sum(-1, keepdims=True)
    experts = 1 / (1 + np.exp(-_np(moe.experts(x)).reshape(4, 3, 2)))
    want = (gates[..., :2] * experts).sum(-1)  # the dummy expert adds 0
    np.testing.assert_allclose(_np(torch.sigmoid(moe(x))), want, rtol=1e-6)
    extreme = moe(1e4 * torch.randn(4, 5))
    assert torch.isfinite(extreme).all()
    assert isinstance(make_classifier("logistic", 5, 3), nn.Linear)


def test_valid_clips_first_keeps_order():
    x = torch.arange(6.0).view(1, 6, 1).repeat(2, 1, 1)
    mask = torch.tensor([[False, True, False, True, True, False], [True] * 6])
    moved, lengths = valid_clips_first(x, mask)
    assert lengths.tolist() == [3, 6]
    assert moved[0, :3, 0].tolist() == [1.0, 3.0, 4.0]
    assert moved[1, :, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_bilstm_state_is_both_directions_over_valid_clips():
    torch.manual_seed(0)
    pooling = LSTMPooling(D, 5, bidirectional=True)
    x, mask = batch()
    got = pooling(x, mask)
    for row in range(x.shape[0]):
        outputs, _ = pooling.lstm(x[row : row + 1, mask[row]])  # (1, T, 2H), no padding
        want = torch.cat([outputs[0, -1, :5], outputs[0, 0, 5:]])
        torch.testing.assert_close(got[row], want)


def test_a_table_entry_is_a_registered_builder_with_its_own_keywords():
    from heads.builders import HEADS, HeadVariant, head_builder
    from heads.netvlad import NetVLAD

    assert set(HEADS) == set(list_heads())
    params = inspect.signature(get_head_builder("nonlocal_nextvlad")).parameters
    assert list(params)[:7] == ["in_dim", "num_classes", "num_clusters", "expansion", "groups", "inner_dim",
                                "hidden_dim"] and params["gating"].default is True
    assert "se_reduction" in inspect.signature(get_head_builder("nextvlad")).parameters
    # a new head over an existing pooling is one entry: same modules as the hand-assembled head
    build = head_builder("netvlad_small", HeadVariant("NetVLAD, 4 clusters.", NetVLAD, {"num_clusters": 4},
                                                      hidden_dim=8))
    torch.manual_seed(0)
    small = build(in_dim=6, num_classes=3)
    torch.manual_seed(0)
    ref = get_head("netvlad", in_dim=6, num_classes=3, num_clusters=4, hidden_dim=8)
    assert small.state_dict().keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(small.state_dict()[k], v)
    with pytest.raises(TypeError):
        build(in_dim=6, num_classes=3, lstm_size=4)
