"""The training toolkit both trainers share: heads.schedule, heads.swa, heads.mixup, store.device,
heads.seeding; each checked against hand-computed values or torch's own implementation."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn as torch_update_bn

from heads._masking import MaskedBatchNorm1d
from heads.mixup import draw_mix, mix_batch
from heads.schedule import LRSchedule
from heads.seeding import derive_seed, keyed_rng
from heads.swa import make_averager, update_bn
from store.device import DeviceUnavailable, resolve_device
from store.errors import VideoFeatError


# ---------------------------------------------------------------------------- schedule
def test_schedule_warmup_then_cosine_to_the_floor():
    s = LRSchedule(lr=2.0, total_steps=8, warmup_steps=2, min_lr_ratio=0.1)  # cosine over steps 2..7
    assert [s(0), s(1)] == [1.0, 2.0]  # lr * (step + 1) / warmup
    for step in range(2, 8):
        cos = 0.5 * (1 + math.cos(math.pi * (step - 2) / 6))
        assert s(step) == pytest.approx(2.0 * (0.1 + 0.9 * cos))
        assert s.factor(step) == pytest.approx(0.1 + 0.9 * cos)
    assert s(8) == pytest.approx(0.2) and s(100) == pytest.approx(0.2)  # stays at lr * min_lr_ratio


def test_schedule_cyclic_constant_and_swa_phase():
    cyc = LRSchedule(lr=1.0, total_steps=8, kind="cyclic", cycle_steps=4)
    assert [cyc(k) for k in range(8)] == pytest.approx([1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5,
                                                       0.5 + 0.5 * math.cos(3 * math.pi / 4)] * 2)
    const = LRSchedule(lr=0.3, total_steps=10, warmup_steps=4, kind="constant")
    assert [const(k) for k in (0, 3, 4, 9)] == pytest.approx([0.075, 0.3, 0.3, 0.3])
    swa = LRSchedule(lr=1.0, total_steps=8, swa_start=6, swa_lr=0.05)  # cosine ends at the SWA phase
    assert swa(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))
    assert [swa(6), swa(7)] == [0.05, 0.05] and swa.factor(7) == pytest.approx(0.05)
    no_swa_lr = LRSchedule(lr=1.0, total_steps=8, swa_start=6)  # SWA without its own rate: the cosine runs on
    assert no_swa_lr(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 6 / 8)))


def test_schedule_drives_lambda_lr_as_the_rates():
    s = LRSchedule(lr=0.5, total_steps=6, warmup_steps=2)
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=s.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, s.factor)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([s(k) for k in range(6)])


# ---------------------------------------------------------------------------- SWA / EMA
def test_averager_swa_is_the_mean_and_ema_the_recursion():
    net = nn.Linear(2, 1, bias=False)
    swa, ema = make_averager(net, "swa"), make_averager(net, "ema", ema_decay=0.5)
    values = [1.0, 2.0, 6.0]
    for v in values:
        with torch.no_grad():
            net.weight.fill_(v)
        swa.update_parameters(net)
        ema.update_parameters(net)
    assert torch.allclose(swa.module.weight, torch.full((1, 2), 3.0)) and int(swa.n_averaged) == 3
    assert torch.allclose(ema.module.weight, torch.full((1, 2), 0.5 * (0.5 * 1 + 0.5 * 2) + 0.5 * 6))
    with pytest.raises(ValueError, match="'swa' or 'ema'"):
        make_averager(net, "mean")


def test_swa_of_random_snapshots_is_their_hand_average():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 3, 3), nn.BatchNorm1d(3), nn.Linear(4, 2))
    avg = make_averager(net)
    snaps = []
    for _ in range(4):
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p))
        snaps.append({k: v.clone() for k, v in net.named_parameters()})
        avg.update_parameters(net)
    for name, p in avg.module.named_parameters():
        torch.testing.assert_close(p, sum(s[name] for s in snaps) / 4, rtol=0, atol=1e-6)


class _TwoNorms(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.clip_bn = MaskedBatchNorm1d(d)
        self.video_bn = nn.BatchNorm1d(d)

    def forward(self, x, mask):
        return self.video_bn(self.clip_bn(x, mask).sum(1))


def test_update_bn_is_mask_aware_and_averages_batches():
    rng = np.random.default_rng(0)
    model = _TwoNorms(3)
    model.clip_bn.momentum = 0.3
    batches, means, variances = [], [], []
    for n in (5, 7):
        x = rng.standard_normal((n, 4, 3)).astype(np.float32) + 2
        mask = rng.random((n, 4)) > 0.4
        mask[:, 0] = True
        x[~mask] = 1e6  # garbage in the padding must not count
        valid = x[mask]
        means.append(valid.mean(0))
        variances.append(valid.var(0, ddof=1))
        batches.append((torch.from_numpy(x), torch.from_numpy(mask)))
    assert update_bn(model, batches) == 2
    np.testing.assert_allclose(model.clip_bn.running_mean.numpy(), np.mean(means, 0), rtol=1e-5)
    np.testing.assert_allclose(model.clip_bn.running_var.numpy(), np.mean(variances, 0), rtol=1e-4)
    assert model.clip_bn.momentum == 0.3 and model.training
    # the video-level norm saw, per batch, the sums of clips normalised with that batch's statistics
    video_means, video_vars = [], []
    for (xt, mt), mean in zip(batches, means):
        x, m = xt.numpy(), mt.numpy()
        var = x[m].var(0)  # biased, as batch norm normalises
        z = np.where(m[..., None], (x - mean) / np.sqrt(var + 1e-5), 0).sum(1)
        video_means.append(z.mean(0))
        video_vars.append(z.var(0, ddof=1))
    np.testing.assert_allclose(model.video_bn.running_mean.numpy(), np.mean(video_means, 0), atol=1e-5)
    np.testing.assert_allclose(model.video_bn.running_var.numpy(), np.mean(video_vars, 0), rtol=1e-4)


def _clip_net():
    return nn.Sequential(nn.Conv3d(3, 4, 3), nn.BatchNorm3d(4), nn.ReLU(), nn.Conv3d(4, 4, 1), nn.BatchNorm3d(4),
                         nn.BatchNorm3d(4, track_running_stats=False))


def test_update_bn_matches_torch_and_leaves_frozen_norms():
    torch.manual_seed(0)
    a, b = _clip_net(), _clip_net()
    b.load_state_dict(a.state_dict())
    batches = [torch.randn(3, 3, 4, 8, 8) * (i + 1) for i in range(3)]
    assert update_bn(a, batches) == 3  # bare tensors: model(x)
    torch_update_bn(batches, b)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, msg=name)
    before = a[1].running_mean.clone()
    update_bn(a, [(torch.randn(2, 3, 4, 8, 8) + 5,)], frozen_norms=["1"])
    assert torch.equal(a[1].running_mean, before) and not torch.allclose(a[4].running_mean, b[4].running_mean)
    assert update_bn(nn.Linear(2, 2), [torch.zeros(1, 2)]) == 0  # nothing to update


# ---------------------------------------------------------------------------- mixup
def test_mixup_per_example_is_framewise_and_mixes_labels_at_the_same_ratio():
    x = torch.randn(4, 3, 5, 6, 6)
    y = torch.eye(4, 7)
    draw = draw_mix(4, 0.4, keyed_rng(0, 1, 2))
    assert np.array_equal(draw.ratio, draw_mix(4, 0.4, keyed_rng(0, 1, 2)).ratio)  # keyed, repeatable
    assert len(set(draw.ratio)) == 4 and sorted(draw.partner) == [0, 1, 2, 3]
    mx, my, mask = mix_batch(x, y, draw)
    assert mask is None
    for i in range(4):
        r, j = float(draw.ratio[i]), int(draw.partner[i])
        for t in range(5):  # every frame of clip i mixed with the same frame of clip j
            torch.testing.assert_close(mx[i, :, t], r * x[i, :, t] + (1 - r) * x[j, :, t])
        torch.testing.assert_close(my[i], r * y[i] + (1 - r) * y[j])
    torch.testing.assert_close(my.sum(1), torch.ones(4))  # one label each: mixed labels sum to 1


@pytest.mark.parametrize("per_example", [True, False])
def test_mixup_ratios_are_beta_distributed(per_example):
    alpha, n = 0.4, 20000
    if per_example:
        ratios = draw_mix(n, alpha, keyed_rng(5)).ratio
    else:  # one ratio per batch, shared by its examples; over many batches still Beta(a, a)
        draws = [draw_mix(3, alpha, keyed_rng(5, i), per_example=False) for i in range(n)]
        assert all(len(set(d.ratio)) == 1 for d in draws[:50])
        ratios = np.array([d.ratio[0] for d in draws])
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)), P(r < 0.1) from the regularised incomplete beta
    assert abs(ratios.mean() - 0.5) < 0.01 and abs(ratios.var() - 1 / (4 * (2 * alpha + 1))) < 0.005
    from scipy.stats import beta

    assert abs((ratios < 0.1).mean() - beta.cdf(0.1, alpha, alpha)) < 0.015


def test_mixup_per_batch_with_a_mask_zeroes_padding_and_joins_masks():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((5, 3, 2)).astype(np.float32))
    mask = torch.from_numpy(rng.random((5, 3)) > 0.5)
    x[~mask] = 1e6  # padding garbage must not leak into the mix
    y = torch.eye(5, 4)
    draw = draw_mix(5, 0.3, keyed_rng(9), per_example=False)
    mx, my, mm = mix_batch(x, y, draw, mask)
    lam, p = float(draw.ratio[0]), draw.partner
    xz = np.where(mask.numpy()[..., None], x.numpy(), 0.0)
    np.testing.assert_allclose(mx.numpy(), lam * xz + (1 - lam) * xz[p], rtol=1e-6)
    np.testing.assert_array_equal(mm.numpy(), mask.numpy() | mask.numpy()[p])
    np.testing.assert_allclose(my.numpy(), lam * y.numpy() + (1 - lam) * y.numpy()[p], rtol=1e-6)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        draw_mix(5, 0.0, keyed_rng(9))


# ---------------------------------------------------------------------------- device, seeding
def test_resolve_device_auto_cpu_and_unavailable_cuda():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto", gpu_visible=lambda: False) == "cpu"
    assert resolve_device("auto", gpu_visible=lambda: True) == "cuda"
    assert resolve_device("cuda:1", gpu_visible=lambda: True) == "cuda:1"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(DeviceUnavailable,
                           match=f"'{name}' asked for but XGBoost sees no CUDA GPU; use --device cpu"):
            resolve_device(name, gpu_visible=lambda: False, library="XGBoost")
    assert issubclass(DeviceUnavailable, VideoFeatError)


def test_seeds_are_keyed_by_their_parts():
    assert derive_seed(3, 0, "mixup") == derive_seed(3, 0, "mixup") < 2**31
    assert len({derive_seed(3, 0, "mixup"), derive_seed(3, 1, "mixup"), derive_seed(3, 0, "torch")}) == 3
    # int parts: the stream numpy's default_rng([seed, epoch, i]) gives (the backbone data keys)
    assert keyed_rng(7, 2, 5).random() == np.random.default_rng([7, 2, 5]).random()
    assert keyed_rng(7, "a").random() != keyed_rng(7, "b").random()
