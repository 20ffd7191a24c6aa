"""SlowFast, I3D + non-local (and inflation), TIN, and the audio backbones."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from extract.backbones import (
    Backbone,
    BackboneInfo,
    WeightsError,
    get_backbone,
    list_backbones,
    temporal_shift,
)
from extract.backbones._narrow import NarrowResNet
from extract.backbones.audio_cnn import _envnet_grid
from extract.backbones.i3d_nonlocal import (
    TINY_LAYERS,
    TINY_WIDTHS,
    NonLocalBlock,
    TemporalPadConv3d,
    inflate_from_2d,
)
from extract.backbones.tin import TemporalInterlace, interlace_shift
from extract.media.audio import AudioSettings, audio_windows, log_mel, vggish_patches

# name: (kind, clip_len, input_size, feature_dim)
DECLARED = {
    "slowfast_tiny": ("clip3d", 8, 32, 256 + 64),
    "i3d_nl_tiny": ("clip3d", 4, 32, 256),
    "tin_tiny": ("clip3d", 8, 32, 64),
    "resnet_audio_tiny": ("audio2d", 198, 64, 64),
    "vggish_tiny": ("audio2d", 96, 64, 32),
    "envnet_tiny": ("audio1d", 32000, 1, 64),
}
DECLARED_FULL = {
    "slowfast_r50": ("clip3d", 32, 224, 2048 + 256),
    "i3d_nl_r50": ("clip3d", 8, 224, 2048),
    "tin_resnet50": ("clip3d", 8, 224, 2048),
    "resnet18_audio": ("audio2d", 198, 64, 512),
    "resnet34_audio": ("audio2d", 198, 64, 512),
    "vggish": ("audio2d", 96, 64, 128),
    "envnet_v2": ("audio1d", 32000, 1, 4096),
}
TINY = list(DECLARED)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(name: str, seed: int = 0, **kw: object) -> Backbone:
    torch.manual_seed(seed)
    return get_backbone(name, **kw)


def input_for(info: BackboneInfo, batch: int = 2, seed: int = 1, size: int | None = None):
    """A random input in the backbone's layout (video clips at ``size`` px if given)."""
    g = torch.Generator().manual_seed(seed)
    if info.kind == "audio2d":
        shape: tuple[int, ...] = (batch, 1, info.clip_len, info.input_size)
    elif info.kind == "audio1d":
        shape = (batch, 1, info.clip_len)
    else:
        side = size or info.input_size
        shape = (batch, info.in_channels, info.clip_len, side, side)
    return torch.randn(*shape, generator=g)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomise_batchnorm(model: nn.Module, seed: int = 5) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode BN is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(0.2 * torch.randn(c, generator=g))


def shift_by(clips: torch.Tensor, k: int) -> torch.Tensor:
    """``out[:, t] = clips[:, t - k]``, zeros outside the clip (torch.roll, then zero the wrap)."""
    out = torch.roll(clips, shifts=k, dims=1)
    if k > 0:
        out[:, :k] = 0
    elif k < 0:
        out[:, k:] = 0
    return out


# --- registry, info, every tiny backbone ---------------------------------------------------


def test_new_backbones_are_registered_with_their_declared_info() -> None:
    assert {*DECLARED, *DECLARED_FULL, "slowfast_r101"} <= set(list_backbones())
    for name, declared in DECLARED.items():
        info = build(name).info
        assert (info.kind, info.clip_len, info.input_size, info.feature_dim) == declared, name
        assert info.name == name and BackboneInfo.from_dict(info.to_dict()) == info
        if info.kind.startswith("audio"):
            assert (info.in_channels, info.modality, info.mean, info.std) == (
                1,
                "audio",
                (0.0,),
                (1.0,),
            )


@pytest.mark.parametrize("name", TINY)
def test_tiny_shapes_gradients_and_no_nans(name: str) -> None:
    kw = {"nl_zero_init": False} if name == "i3d_nl_tiny" else {}  # zero gamma blocks NL grads
    model = build(name, num_classes=5, **kw)
    x = input_for(model.info)
    assert model.forward_features(x).shape == (2, model.info.feature_dim)
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize("name", TINY)
def test_tiny_is_deterministic_and_stages_partition_the_parameters(name: str) -> None:
    a, b, c = build(name).eval(), build(name).eval(), build(name, seed=1).eval()
    x = input_for(a.info)
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(ya, yb) and not torch.allclose(ya, yc)
    model = build(name, num_classes=3)
    stages = model.stages()
    assert len(stages) == 6
    ids = [id(p) for s in stages for p in s.parameters()]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


# --- full-size: parameter counts against the papers, one cheap forward ----------------------


@pytest.mark.parametrize("name", list(DECLARED_FULL))
def test_full_size_info_and_forward(name: str) -> None:
    model = build(name).eval()
    info = model.info
    assert (info.kind, info.clip_len, info.input_size, info.feature_dim) == DECLARED_FULL[name]
    x = input_for(info, batch=1, size=32)
    if info.kind == "clip3d":
        x = x[:, :, :8]
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, info.feature_dim) and torch.isfinite(out).all()


def test_parameter_counts_match_the_papers() -> None:
    # SlowFast 4x16 R50 with a Kinetics-400 classifier: 34.4M (Feichtenhofer 2020, X3D Table 4).
    slowfast = build("slowfast_r50", num_classes=400)
    assert abs(n_params(slowfast) / 34.4e6 - 1) < 0.02, n_params(slowfast)
    # I3D R50 (3x1x1 every other block) ~28M; each non-local block on C channels adds
    # theta, phi, g (C -> C/2, with bias), W_z (C/2 -> C, with bias) and a BN (2C).
    plain = build("i3d_nl_r50", num_classes=400, nonlocal_at=((), (), (), ()))
    assert 27e6 < n_params(plain) < 29e6, n_params(plain)
    nl = build("i3d_nl_r50", num_classes=400)

    def block(c: int) -> int:
        return 3 * (c * c // 2 + c // 2) + (c // 2 * c + c) + 2 * c

    assert n_params(nl) - n_params(plain) == 2 * block(512) + 3 * block(1024)
    assert sum(isinstance(m, NonLocalBlock) for m in nl.modules()) == 5
    # VGGish: 72.1M (the released AudioSet model).
    assert abs(n_params(build("vggish")) / 72.1e6 - 1) < 0.005
    # The audio ResNets are torchvision's minus the classifier, with a 1-channel conv1.
    for arch in ("resnet18", "resnet34"):
        tv = getattr(tv_resnet, arch)(weights=None)
        expected = n_params(tv) - n_params(tv.fc) - 2 * 64 * 7 * 7
        assert n_params(build(f"{arch}_audio")) == expected
    # TIN adds only its small offset / weight nets to ResNet-50.
    tin, r50 = build("tin_resnet50"), build("resnet50")
    extra = n_params(tin) - n_params(r50)
    interlace = sum(n_params(m) for n, m in tin.named_modules() if n.endswith(".interlace"))
    assert extra == interlace and 0 < extra < 0.002 * n_params(r50)


# --- SlowFast ------------------------------------------------------------------------------


def test_slowfast_r50_follows_the_paper_table() -> None:
    model = build("slowfast_r50")
    assert model.slow_stem[0].kernel_size == (1, 7, 7) and model.fast_stem[0].kernel_size == (
        5,
        7,
        7,
    )
    assert model.fast_stem[0].out_channels == 8  # beta = 1/8 of 64
    # Lateral: 5x1x1, time stride alpha = 8, 2 * beta * C outputs.
    fuse = model.fuse0.conv
    assert (fuse.kernel_size, fuse.stride, fuse.in_channels, fuse.out_channels) == (
        (5, 1, 1),
        (8, 1, 1),
        8,
        16,
    )
    # Slow inputs of res2..res5: 64 + 16, 256 + 64, 512 + 128, 1024 + 256.
    slow_in = [model.get_submodule(f"slow_layer{i}")[0].conv1.in_channels for i in range(1, 5)]
    assert slow_in == [80, 320, 640, 1280]
    for i, (slow_kt, blocks) in enumerate(zip((1, 1, 3, 3), (3, 4, 6, 3), strict=True), start=1):
        slow, fast = model.get_submodule(f"slow_layer{i}"), model.get_submodule(f"fast_layer{i}")
        assert len(slow) == len(fast) == blocks
        assert all(b.conv1.kernel_size[0] == slow_kt for b in slow)
        assert all(b.conv1.kernel_size[0] == 3 for b in fast)


def test_slowfast_slow_pathway_sees_every_alpha_th_frame() -> None:
    model = build("slowfast_tiny").eval()  # alpha 4; features = 256 slow + 64 fast
    with torch.no_grad():  # cut the laterals: slow features then see only slow frames
        for i in range(4):
            model.get_submodule(f"fuse{i}").conv.weight.zero_()
    x = input_for(model.info)
    off, on = x.clone(), x.clone()
    off[:, :, 1] += 1.0  # not a multiple of alpha
    on[:, :, 4] += 1.0
    with torch.no_grad():
        y, y_off, y_on = model(x), model(off), model(on)
    assert torch.equal(y_off[:, :256], y[:, :256]) and not torch.allclose(
        y_off[:, 256:], y[:, 256:]
    )
    assert not torch.allclose(y_on[:, :256], y[:, :256])


@pytest.mark.parametrize("frames", [1, 5, 7, 12])
def test_slowfast_runs_on_any_clip_length_and_flow(frames: int) -> None:
    model = build("slowfast_tiny").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, frames, 32, 32)).shape == (1, 320)
    flow = build("slowfast_tiny", in_channels=2)
    assert flow.slow_stem[0].in_channels == flow.fast_stem[0].in_channels == 2
    assert flow(torch.randn(2, 2, frames, 32, 32)).shape == (2, 320)


# --- I3D + non-local -----------------------------------------------------------------------


def test_i3d_r50_temporal_kernels_and_nonlocal_positions() -> None:
    model = build("i3d_nl_r50")
    kernels = [
        [b.conv1.kernel_size[0] for b in model.get_submodule(f"layer{i}")] for i in range(1, 5)
    ]
    assert kernels == [[3, 3, 3], [3, 1, 3, 1], [3, 1, 3, 1, 3, 1], [1, 3, 1]]
    where = [
        [j for j, b in enumerate(model.get_submodule(f"layer{i}")) if b.nl] for i in range(1, 5)
    ]
    assert where == [[], [1, 3], [1, 3, 5], []]
    assert model.layer2[1].nl.inner == 256 and model.conv1.kernel_size == (5, 7, 7)
    with pytest.raises(ValueError, match="outside this stage"):
        get_backbone("i3d_nl_tiny", nonlocal_at=((), (2,), (), ()))


def test_nonlocal_block_matches_a_brute_force_embedded_gaussian() -> None:
    torch.manual_seed(0)
    for subsample in ((1, 1, 1), (1, 2, 2)):
        block = NonLocalBlock(6, subsample=subsample, zero_init=False)
        randomise_batchnorm(block)
        block.eval()
        x = torch.randn(2, 6, 3, 4, 5)

        def proj(conv: nn.Conv3d, v: torch.Tensor) -> torch.Tensor:
            w = conv.weight[:, :, 0, 0, 0]
            return torch.einsum("oc,bcthw->bothw", w, v) + conv.bias.view(1, -1, 1, 1, 1)

        theta = proj(block.conv_theta, x).flatten(2)
        phi = F.max_pool3d(proj(block.conv_phi, x), subsample, subsample, ceil_mode=True)
        g = F.max_pool3d(proj(block.conv_g, x), subsample, subsample, ceil_mode=True)
        phi, g = phi.flatten(2), g.flatten(2)
        y = torch.zeros_like(theta)
        for b in range(2):
            for i in range(theta.shape[2]):
                scores = torch.stack(
                    [theta[b, :, i] @ phi[b, :, j] / math.sqrt(3) for j in range(phi.shape[2])]
                )
                y[b, :, i] = (g[b] * scores.softmax(0)).sum(dim=1)
        z = proj(block.conv_out, y.view(2, 3, 3, 4, 5))
        bn = block.bn
        z = (z - bn.running_mean.view(1, -1, 1, 1, 1)) / torch.sqrt(
            bn.running_var.view(1, -1, 1, 1, 1) + bn.eps
        ) * bn.weight.view(1, -1, 1, 1, 1) + bn.bias.view(1, -1, 1, 1, 1)
        with torch.no_grad():
            torch.testing.assert_close(block(x), x + z, atol=1e-5, rtol=1e-5)


def test_nonlocal_blocks_are_the_identity_at_init() -> None:
    block = NonLocalBlock(8)
    x = torch.randn(2, 8, 2, 4, 4)
    assert torch.equal(block(x), x) and torch.equal(block.eval()(x), x)  # train and eval mode
    model = build("i3d_nl_tiny").eval()
    x = input_for(model.info)
    with torch.no_grad():
        with_nl = model(x)
        for m in model.modules():
            if getattr(m, "nl", None) is not None:
                m.nl = None
        assert torch.equal(model(x), with_nl)


def test_inflated_i3d_answers_a_constant_clip_like_the_2d_resnet(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net2d = NarrowResNet(tv_resnet.Bottleneck, TINY_LAYERS, TINY_WIDTHS)
    randomise_batchnorm(net2d)
    net2d.eval()
    model = inflate_from_2d(build("i3d_nl_tiny"), net2d.state_dict()).eval()
    w2d = net2d.layer1[0].conv1.weight
    assert torch.equal(model.layer1[0].conv1.weight, w2d.unsqueeze(2).expand(-1, -1, 3, -1, -1) / 3)
    frame = torch.randn(2, 3, 32, 32)
    clip = frame.unsqueeze(2).expand(-1, -1, 6, -1, -1)  # (B, 3, H, W) -> (B, 3, T, H, W)
    with torch.no_grad():
        expected = net2d(frame)  # fc is Identity: the pooled 256-d feature
        torch.testing.assert_close(model.forward_features(clip), expected, atol=1e-4, rtol=1e-4)
        # The paper's zero temporal padding breaks the fixed point at the clip's ends.
        path = tmp_path / "r2d.pth"
        torch.save(net2d.state_dict(), path)
        zeros = inflate_from_2d(build("i3d_nl_tiny", temporal_padding="zeros"), path).eval()
        assert not torch.allclose(zeros.forward_features(clip), expected, atol=1e-2)
        # Stem by hand: 5 taps of w/5 over zero-padded time see 3, 4, 5, 5, 4, 3 real frames.
        stem = zeros.conv1(clip)
        per_frame = F.conv2d(frame, net2d.conv1.weight, stride=2, padding=3)
        scale = torch.tensor([3, 4, 5, 5, 4, 3]) / 5
        torch.testing.assert_close(stem, per_frame.unsqueeze(2) * scale.view(1, 1, 6, 1, 1))


def test_inflation_rejects_another_architecture_and_fits_flow() -> None:
    wrong = NarrowResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], TINY_WIDTHS).state_dict()
    with pytest.raises(WeightsError, match="does not fit"):
        inflate_from_2d(build("i3d_nl_tiny"), wrong)
    net2d = NarrowResNet(tv_resnet.Bottleneck, TINY_LAYERS, TINY_WIDTHS)
    flow = inflate_from_2d(build("i3d_nl_tiny", in_channels=2), net2d.state_dict())
    expected = net2d.conv1.weight.mean(1, keepdim=True).expand(-1, 2, -1, -1).unsqueeze(2) / 5
    torch.testing.assert_close(flow.conv1.weight, expected.expand(-1, -1, 5, -1, -1))
    conv = TemporalPadConv3d(1, 1, (3, 1, 1), temporal_padding="replicate")
    with pytest.raises(ValueError, match="temporal_padding"):
        TemporalPadConv3d(1, 1, (3, 1, 1), temporal_padding="reflect")  # type: ignore[arg-type]
    assert conv.padding == (0, 0, 0) and conv.time_pad == 1


# --- TIN -------------------------------------------------------------------------------------


def test_interlace_shift_integer_and_fractional_offsets() -> None:
    n, t, g, c = 2, 5, 4, 2  # 2 clips x 5 frames, 4 groups of 2 channels, 3x2 pixels
    x = torch.randn(n * t, g * c, 3, 2)
    clips = x.view(n, t, g, c, 3, 2)
    ints = torch.tensor([[1, -2, 0, 4], [-1, 3, 2, -5]])
    out = interlace_shift(x, ints.float(), t).view(n, t, g, c, 3, 2)
    for i in range(n):
        for j in range(g):
            expected = shift_by(clips[i : i + 1, :, j], int(ints[i, j]))[0]
            assert torch.equal(out[i, :, j], expected)
    # A fractional offset is the linear interpolation of the two neighbouring integer shifts.
    frac = interlace_shift(x, ints.float() + 0.5, t).view(n, t, g, c, 3, 2)
    quarter = interlace_shift(x, ints.float() - 0.25, t).view(n, t, g, c, 3, 2)
    for i in range(n):
        for j in range(g):
            k, lo = int(ints[i, j]), clips[i : i + 1, :, j]
            torch.testing.assert_close(
                frac[i, :, j], (shift_by(lo, k) + shift_by(lo, k + 1))[0] / 2
            )
            expected = 0.75 * shift_by(lo, k) + 0.25 * shift_by(lo, k - 1)
            torch.testing.assert_close(quarter[i, :, j], expected[0])
    with pytest.raises(ValueError, match="equal groups"):
        interlace_shift(torch.randn(10, 6, 1, 1), torch.zeros(2, 4), 5)


def test_interlace_shift_with_offsets_minus_one_plus_one_is_tsm() -> None:
    x = torch.randn(2 * 4, 16, 2, 2)
    fold = 16 // 8
    tsm = temporal_shift(x, n_segment=4, shift_div=8)
    tin = interlace_shift(x[:, : 2 * fold], torch.tensor([[-1.0, 1.0]] * 2), 4)
    assert torch.equal(tin, tsm[:, : 2 * fold])


def test_interlace_shift_gradients_match_finite_differences() -> None:
    x = torch.randn(2 * 3, 4, 1, 2, dtype=torch.float64, requires_grad=True)
    offsets = torch.tensor([[0.3, -1.6], [1.2, 0.7]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, o: interlace_shift(a, o, 3), (x, offsets))


def test_temporal_interlace_with_forced_offsets_and_weights() -> None:
    torch.manual_seed(0)
    module = TemporalInterlace(8, n_segment=4, shift_div=2, groups=2)  # 4 channels, 4 groups
    wanted = torch.tensor([1.0, 0.5])  # groups 2, 3 take -1, -0.5
    with torch.no_grad():
        module.offset_net.fc2.weight.zero_()
        p = (1 + wanted / 2) / 2  # offsets = 2 * (2 sigmoid(z) - 1)
        module.offset_net.fc2.bias.copy_(torch.log(p / (1 - p)))
        module.weight_net.conv.weight.zero_()  # weights 2 sigmoid(0) = 1
    x = torch.randn(2 * 4, 8, 3, 3)
    clips = x.view(2, 4, 8, 3, 3)
    with torch.no_grad():
        out = module(x).view(2, 4, 8, 3, 3)
    expected = torch.stack(
        [
            shift_by(clips[:, :, 0], 1),
            (shift_by(clips[:, :, 1], 0) + shift_by(clips[:, :, 1], 1)) / 2,
            shift_by(clips[:, :, 2], -1),
            (shift_by(clips[:, :, 3], -1) + shift_by(clips[:, :, 3], 0)) / 2,
        ],
        dim=2,
    )
    torch.testing.assert_close(out[:, :, :4], expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(out[:, :, 4:], clips[:, :, 4:])
    # Gradients reach the offset and weight networks (of a module left as initialised).
    module = TemporalInterlace(8, n_segment=4, shift_div=2, groups=2)
    module(x.requires_grad_()).square().sum().backward()
    for name in ("offset_net.fc2.weight", "offset_net.fc1.weight", "offset_net.conv.weight"):
        assert module.get_parameter(name).grad.abs().sum() > 0, name
    assert module.weight_net.conv.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="equal groups"):
        TemporalInterlace(8, n_segment=4, shift_div=4, groups=2)


def test_tin_mixes_frames_per_clip_and_loads_a_plain_resnet() -> None:
    frame, model = build("resnet_tiny"), build("tin_tiny", seed=3)
    result = model.load_state_dict(frame.state_dict(), strict=False)
    assert not result.unexpected_keys and result.missing_keys
    assert all(".conv1.interlace." in k for k in result.missing_keys)
    model.eval()
    x = input_for(model.info)
    with torch.no_grad():
        y, y_rev = model(x), model(x.flip(2))
        alone = torch.cat([model(x[i : i + 1]) for i in range(2)])
    assert not torch.allclose(y, y_rev, atol=1e-5)
    torch.testing.assert_close(y, alone)
    with pytest.raises(ValueError, match="clip_len=8"):
        model(x[:, :, :4])


# --- audio -----------------------------------------------------------------------------------


def test_imagenet_resnet_weights_load_into_the_audio_resnet(tmp_path: Path) -> None:
    rgb = build("resnet_tiny")
    randomise_batchnorm(rgb)
    path = tmp_path / "imagenet.pth"
    torch.save(rgb.state_dict(), path)
    audio = build("resnet_audio_tiny", seed=4, weights=path).eval()
    assert torch.equal(audio.conv1.weight, rgb.conv1.weight.mean(dim=1, keepdim=True))
    x = input_for(audio.info)
    with torch.no_grad():  # 1-channel log-mel == the RGB net on the grey image x / 3 per channel
        expected = rgb.eval().frame_features((x / 3).expand(-1, 3, -1, -1))
        torch.testing.assert_close(audio(x), expected, atol=1e-5, rtol=1e-5)


def test_vggish_has_the_torchvggish_layout() -> None:
    shapes = {k: tuple(v.shape) for k, v in build("vggish").state_dict().items()}
    convs = {0: (64, 1), 3: (128, 64), 6: (256, 128), 8: (256, 256), 11: (512, 256), 13: (512, 512)}
    expected = {f"features.{i}.weight": (o, c, 3, 3) for i, (o, c) in convs.items()}
    expected |= {f"features.{i}.bias": (o,) for i, (o, _) in convs.items()}
    fcs = {0: (4096, 512 * 6 * 4), 2: (4096, 4096), 4: (128, 4096)}
    expected |= {f"embeddings.{i}.weight": s for i, s in fcs.items()}
    expected |= {f"embeddings.{i}.bias": (s[0],) for i, s in fcs.items()}
    assert shapes == expected


def test_envnet_v2_layer_table() -> None:
    # The paper's 66,650 samples reach fc11 as 256 x 10 x 8; our 32,000 (2 s at 16 kHz) as 256 x 10 x 2.
    assert _envnet_grid(66_650, 64) == (10, 8)
    model = build("envnet_v2")
    assert model.fc11.in_features == 256 * 10 * 2 and model.fc12.out_features == 4096
    assert model.conv1[0].kernel_size == (64,) and model.conv2[0].kernel_size == (16,)
    with pytest.raises(ValueError, match="too short"):
        get_backbone("envnet_tiny", clip_len=8000)


def test_audio_inputs_and_channels() -> None:
    for name, bad in (
        ("vggish_tiny", torch.randn(2, 1, 95, 64)),  # the fc fixes the patch
        ("resnet_audio_tiny", torch.randn(2, 1, 96, 40)),  # wrong number of mel bands
        ("resnet_audio_tiny", torch.randn(2, 3, 1, 96, 64)),  # a video clip
        ("envnet_tiny", torch.randn(2, 1, 31_999)),
    ):
        with pytest.raises(ValueError, match="mono audio"):
            build(name)(bad)
    longer = build("resnet_audio_tiny").eval()(torch.randn(1, 1, 300, 64))  # any length F
    assert longer.shape == (1, 64)
    assert get_backbone("vggish_tiny", in_channels=1).input_channels == 1
    with pytest.raises(ValueError, match="mono"):
        get_backbone("vggish_tiny", in_channels=2)


def test_audio_backbones_take_what_extract_audio_prepares() -> None:
    settings = AudioSettings()
    g = torch.Generator().manual_seed(0)
    track = (0.1 * torch.randn(3 * settings.sample_rate, generator=g)).numpy()  # 3 s, mono
    times = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]).numpy()
    wave, valid = audio_windows(track, settings.sample_rate, times, settings.window_s)
    mel = log_mel(wave, settings)  # (N, F, M)
    patches = vggish_patches(mel)  # (N, P, 96, M)
    inputs = {
        "resnet_audio_tiny": mel.unsqueeze(1),  # (N, F, M) -> (N, 1, F, M)
        "vggish_tiny": patches.reshape(-1, 1, *patches.shape[-2:]),  # -> (N*P, 1, 96, M)
        "envnet_tiny": torch.as_tensor(wave).unsqueeze(1),  # (N, S) -> (N, 1, S)
    }
    for name, x in inputs.items():
        model = build(name).eval()
        info = model.info
        expected = info.clip_len if info.kind == "audio1d" else (info.clip_len, info.input_size)
        assert (x.shape[2] if info.kind == "audio1d" else tuple(x.shape[2:])) == expected, name
        with torch.no_grad():
            assert model(x).shape == (x.shape[0], info.feature_dim)
    assert valid.all() and build("resnet18_audio").info.clip_len == settings.frames_per_window
    assert build("envnet_v2").info.clip_len == settings.window_samples
