"""SlowFast with TSM temporal shifts in every residual block (``shift_div``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from extract.backbones import temporal_shift
from extract.backbones.slowfast import ShiftConv3d, shifted_name, temporal_shift_5d
from tests.extract.test_backbones_more import build, n_params, randomise_batchnorm


def clip(t: int = 8, seed: int = 1, channels: int = 3, side: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, channels, t, side, side, generator=g)


def blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [
        (f"{path}_layer{i}.{j}", block)
        for path in ("slow", "fast")
        for i in range(1, 5)
        for j, block in enumerate(model.get_submodule(f"{path}_layer{i}"))
    ]


# --- the 5-D shift ---------------------------------------------------------------------------


def test_temporal_shift_5d_hand_computed() -> None:
    x = torch.tensor([[10.0 * c + t for t in range(3)] for c in range(4)])  # (C=4, T=3)
    out = temporal_shift_5d(x.view(1, 4, 3, 1, 1), shift_div=4).view(4, 3)  # fold = 1
    expected = torch.tensor(
        [
            [1.0, 2.0, 0.0],  # channel 0: frame t <- t+1, zeros at the end
            [0.0, 10.0, 11.0],  # channel 1: frame t <- t-1, zeros at the start
            [20.0, 21.0, 22.0],
            [30.0, 31.0, 32.0],
        ]
    )
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match=r"\(N, C, T, H, W\)"):
        temporal_shift_5d(torch.zeros(4, 3, 2, 2))


@pytest.mark.parametrize("shift_div", [2, 4, 8])
def test_temporal_shift_5d_is_tsm_shift_in_the_clip_layout(shift_div: int) -> None:
    x = torch.randn(3, 16, 5, 2, 3, generator=torch.Generator().manual_seed(0))  # (N, C, T, H, W)
    frames = x.transpose(1, 2).reshape(15, 16, 2, 3)  # -> (N*T, C, H, W)
    tsm = temporal_shift(frames, 5, shift_div).view(3, 5, 16, 2, 3).transpose(1, 2)
    assert torch.equal(temporal_shift_5d(x, shift_div), tsm)


# --- shift_div = 0 is the model as it was ------------------------------------------------------


def test_shift_div_zero_is_the_unchanged_model() -> None:
    model = build("slowfast_tiny", num_classes=3, shift_div=0).eval()
    assert model.info.name == "slowfast_tiny"
    assert not any(isinstance(m, ShiftConv3d) for m in model.modules())
    with torch.no_grad():
        feats, logits = model.forward_features(clip()), model(clip())
    # Golden values of slowfast_tiny (seed 0, clip seed 1) before shift_div existed.
    assert feats[0, :3].tolist() == pytest.approx([0.0, 0.28968716, 1.73878264], abs=1e-5)
    assert feats.sum().item() == pytest.approx(229.771698, rel=1e-5)
    expected = torch.tensor(
        [[0.08306962, 0.03296376, -0.04066989], [0.08158167, 0.03899344, -0.01303568]]
    )
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=1e-4)


# --- the shifted blocks ----------------------------------------------------------------------------


def test_shifted_block_is_plain_block_with_shift_before_conv1_only() -> None:
    plain = build("slowfast_tiny").eval()
    shifted = build("slowfast_shift_tiny").eval()
    randomise_batchnorm(plain)
    randomise_batchnorm(shifted)
    pairs = list(zip(blocks(plain), blocks(shifted), strict=True))
    assert len(pairs) == 8  # 1 block per stage, 4 stages, 2 pathways
    for (name, p_block), (_, s_block) in pairs:
        assert isinstance(s_block.conv1, ShiftConv3d) and s_block.conv1.shift_div == 8, name
        c = p_block.conv1.in_channels
        # the residual shift: conv1 sees shift(x), the shortcut sees x
        p_block.conv1.register_forward_pre_hook(lambda m, args: (temporal_shift_5d(args[0], 8),))
        x = torch.randn(2, c, 6, 4, 4, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            torch.testing.assert_close(s_block(x), p_block(x), msg=name)


def test_shift_mixes_exactly_the_neighbouring_frames() -> None:
    changed = {}
    for name in ("slowfast_tiny", "slowfast_shift_tiny"):
        block = build(name).eval().slow_layer1[0]  # 1x1x1 then 1x3x3 convs: frame-local unshifted
        randomise_batchnorm(block)
        x = torch.randn(
            1, block.conv1.in_channels, 5, 4, 4, generator=torch.Generator().manual_seed(2)
        )
        y = x.clone()
        y[:, :, 2] += 1.0  # change frame 2 only
        with torch.no_grad():
            diff = (block(y) - block(x)).abs().amax(dim=(0, 1, 3, 4))  # (B, C, T, H, W) -> (T,)
        changed[name] = [i for i, d in enumerate(diff.tolist()) if d > 1e-6]
    assert changed["slowfast_tiny"] == [2]
    assert changed["slowfast_shift_tiny"] == [1, 2, 3]


# --- registry: names, shapes, parameters, checkpoints ---------------------------------------------


def test_tiny_variant_shapes_name_and_same_parameters() -> None:
    plain, shifted = build("slowfast_tiny"), build("slowfast_shift_tiny")
    assert shifted.info.name == "slowfast_shift_tiny"
    assert shifted.info.to_dict() == {**plain.info.to_dict(), "name": "slowfast_shift_tiny"}
    assert build("slowfast_tiny", shift_div=8).info.name == "slowfast_shift_tiny"
    assert build("slowfast_shift_tiny", shift_div=4).info.name == "slowfast_shift4_tiny"
    assert shifted_name("slowfast_r101", 2) == "slowfast_shift2_r101"
    # same initial weights under the same seed: shifts add no parameter and draw no number
    assert n_params(shifted) == n_params(plain)
    p_state, s_state = plain.state_dict(), shifted.state_dict()
    assert list(p_state) == list(s_state)
    assert all(torch.equal(p_state[k], s_state[k]) for k in p_state)
    plain.eval(), shifted.eval()
    for t in (8, 5):
        with torch.no_grad():
            a, b = plain(clip(t)), shifted(clip(t))
        assert b.shape == (2, 256 + 64) and torch.isfinite(b).all()
        assert not torch.allclose(a, b)
    flow = build("slowfast_shift_tiny", in_channels=2, num_classes=4).eval()
    assert flow.info.modality == "flow" and flow(clip(channels=2)).shape == (2, 4)


def test_plain_checkpoint_loads_into_the_shifted_model() -> None:
    plain = build("slowfast_tiny", seed=7)
    shifted = build("slowfast_shift_tiny", seed=0)
    shifted.load_state_dict(plain.state_dict())  # strict: identical keys and shapes
    assert torch.equal(shifted.fast_layer4[0].conv1.weight, plain.fast_layer4[0].conv1.weight)


def test_r50_variant_has_the_plain_parameter_count_and_32_shifted_blocks() -> None:
    model = build("slowfast_shift_r50")
    assert model.info.name == "slowfast_shift_r50" and model.info.feature_dim == 2304
    shifts = [m for m in model.modules() if isinstance(m, ShiftConv3d)]
    assert len(shifts) == 2 * (3 + 4 + 6 + 3)
    assert n_params(model) == n_params(build("slowfast_r50"))


@pytest.mark.parametrize("shift_div", [1, -2])
def test_bad_shift_div_is_a_clear_error(shift_div: int) -> None:
    with pytest.raises(ValueError, match="shift_div must be 0"):
        build("slowfast_tiny", shift_div=shift_div)
