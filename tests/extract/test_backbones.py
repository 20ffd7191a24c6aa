"""Backbone registry, TSN/TSM/3D backbones, cross-modality init and checkpoint loading."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from extract.backbones import (
    Backbone,
    BackboneInfo,
    WeightsError,
    adapt_first_conv,
    file_sha256,
    get_backbone,
    list_backbones,
    load_weights,
    register_backbone,
    temporal_shift,
)

# CPU-sized nets (the test variants and tsm_small, the demo's RGB net): shapes, gradients, seeds
TINY = [n for n in list_backbones() if n.endswith(("_tiny", "_small"))]
FULL = [n for n in list_backbones() if n not in TINY]
# name: (kind, clip_len, input_size, feature_dim)
DECLARED = {
    "resnet18": ("frame2d", 1, 224, 512),
    "resnet50": ("frame2d", 1, 224, 2048),
    "resnet101": ("frame2d", 1, 224, 2048),
    "tsm_resnet18": ("clip3d", 8, 224, 512),
    "tsm_resnet50": ("clip3d", 8, 224, 2048),
    "r2plus1d_18": ("clip3d", 16, 112, 512),
    "r3d_18": ("clip3d", 16, 112, 512),
    "mc3_18": ("clip3d", 16, 112, 512),
    "slowfast_r50": ("clip3d", 32, 224, 2304),
    "slowfast_shift_r50": ("clip3d", 32, 224, 2304),
    "slowfast_r101": ("clip3d", 32, 224, 2304),
    "i3d_nl_r50": ("clip3d", 8, 224, 2048),
    "slowfast_8x8_r50": ("clip3d", 32, 224, 2304),
    "i3d_8x8_r50": ("clip3d", 8, 224, 2048),
    "i3d_nln_8x8_r50": ("clip3d", 8, 224, 2048),
    "vggish_relu": ("audio2d", 96, 64, 128),
    "tin_resnet50": ("clip3d", 8, 224, 2048),
    "s3d": ("clip3d", 128, 224, 1024),
    "mvit_v1_b": ("clip3d", 16, 224, 768),
    "mvit_v2_s": ("clip3d", 16, 224, 768),
    "swin3d_t": ("clip3d", 32, 224, 768),
    "swin3d_s": ("clip3d", 32, 224, 768),
    "swin3d_b": ("clip3d", 32, 224, 1024),
    "resnet18_audio": ("audio2d", 198, 64, 512),
    "resnet34_audio": ("audio2d", 198, 64, 512),
    "vggish": ("audio2d", 96, 64, 128),
    "envnet_v2": ("audio1d", 32000, 1, 4096),
}
# Built here but run at their own minimum input in test_pretrained.py (S3D: 16x224x224; MViT: exactly
# 16x224x224), against torchvision's own forward: too costly to repeat for every variant.
NO_SMALL_INPUT = {"s3d", "mvit_v1_b", "mvit_v2_s"}
# Builder options for the generic tests: zero-initialised non-local blocks pass no
# gradient to their inner convs at init (the paper's design), so start them at gamma 1.
TEST_KWARGS: dict[str, dict[str, object]] = {"i3d_nl_tiny": {"nl_zero_init": False}}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(name: str, seed: int = 0, **kw: object) -> Backbone:
    torch.manual_seed(seed)
    return get_backbone(name, **kw)


def clip_for(
    model: Backbone, batch: int = 2, frames: int | None = None, seed: int = 1
) -> torch.Tensor:
    info = model.info
    t = frames if frames is not None else info.clip_len
    g = torch.Generator().manual_seed(seed)
    if info.kind == "audio2d":  # (B, 1, F frames, M mels)
        return torch.randn(batch, 1, info.clip_len, info.input_size, generator=g)
    if info.kind == "audio1d":  # (B, 1, S samples)
        return torch.randn(batch, 1, info.clip_len, generator=g)
    return torch.randn(
        batch, model.input_channels, t, info.input_size, info.input_size, generator=g
    )


# --- registry and info -------------------------------------------------------------------


def test_registry_has_every_family() -> None:
    assert set(DECLARED) <= set(list_backbones())
    assert {"resnet_tiny", "tsm_tiny", "r2plus1d_tiny", "r3d_tiny", "mc3_tiny"} <= set(TINY)
    assert list_backbones() == sorted(list_backbones())


def test_registering_a_name_twice_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18")(lambda **kw: None)


def test_unknown_backbone_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match="resnet18"):
        get_backbone("resnet19")


def test_info_validation_and_round_trip() -> None:
    info = get_backbone("r2plus1d_tiny").info
    assert BackboneInfo.from_dict(info.to_dict()) == info
    assert info.in_channels == 3 and info.kind == "clip3d" and info.modality == "rgb"
    good = {
        "name": "x",
        "kind": "frame2d",
        "feature_dim": 4,
        "clip_len": 1,
        "input_size": 8,
        "mean": (0.5,),
        "std": (0.2,),
    }
    BackboneInfo(**good)
    for bad in (
        {"kind": "2d"},
        {"clip_len": 8},
        {"std": (0.1, 0.2)},
        {"std": (0.0,)},
        {"feature_dim": 0},
        {"modality": ""},
    ):
        with pytest.raises(ValueError):
            BackboneInfo(**{**good, **bad})
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.clip_len = 3  # type: ignore[misc]


def test_declared_normalisation() -> None:
    assert tiny("resnet_tiny").info.mean == (0.485, 0.456, 0.406)  # ImageNet
    assert tiny("r2plus1d_tiny").info.std == (0.22803, 0.22145, 0.216989)  # Kinetics
    assert get_backbone("r3d_tiny", clip_len=6).info.clip_len == 6


# --- every backbone: shapes, gradients, determinism ---------------------------------------


@pytest.mark.parametrize("name", FULL)
def test_full_size_backbones_build_and_run(name: str) -> None:
    model = get_backbone(name, weights="random").eval()
    info = model.info
    assert (info.kind, info.clip_len, info.input_size, info.feature_dim) == DECLARED[name]
    assert info.name == name and info.in_channels == (1 if info.kind.startswith("audio") else 3)
    if name in NO_SMALL_INPUT:
        return
    if info.kind.startswith("audio"):
        x = clip_for(model, batch=1)
    else:  # TIN needs its clip_len frames
        frames = 1 if info.kind == "frame2d" else min(info.clip_len, 8)
        x = torch.randn(1, 3, frames, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, model.info.feature_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", TINY)
def test_tiny_shapes_gradients_and_no_nans(name: str) -> None:
    model = tiny(name, num_classes=5, **TEST_KWARGS.get(name, {}))
    x = clip_for(model)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.info.feature_dim)
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize("name", TINY)
def test_tiny_is_deterministic_under_a_seed(name: str) -> None:
    a, b, c = tiny(name).eval(), tiny(name).eval(), tiny(name, seed=1).eval()
    x = clip_for(a)
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(ya, yb)
    assert not torch.allclose(ya, yc)


@pytest.mark.parametrize("name", TINY)
def test_stages_partition_the_parameters(name: str) -> None:
    for num_classes in (None, 3):
        model = tiny(name, num_classes=num_classes)
        stages = model.stages()
        assert len(stages) == 5 + (num_classes is not None)
        ids = [id(p) for s in stages for p in s.parameters()]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in model.parameters()}
    assert next(iter(stages[-1].parameters())) is model.fc.weight


def test_forward_without_classifier_returns_features() -> None:
    model = tiny("resnet_tiny").eval()
    x = clip_for(model)
    assert model.num_classes is None and torch.equal(model(x), model.forward_features(x))


def test_wrong_input_layout_is_a_clear_error() -> None:
    model = tiny("resnet_tiny")
    with pytest.raises(ValueError, match="unsqueeze"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        model(torch.randn(2, 2, 1, 32, 32))


def test_frame_model_averages_per_frame_features() -> None:
    model = tiny("resnet_tiny").eval()
    x = clip_for(model, frames=3)
    with torch.no_grad():
        whole = model.forward_features(x)
        per_frame = torch.stack([model.forward_features(x[:, :, t : t + 1]) for t in range(3)])
        shuffled = model.forward_features(x[:, :, [2, 0, 1]])
    torch.testing.assert_close(whole, per_frame.mean(0))
    torch.testing.assert_close(whole, shuffled)  # TSN frames are order-free


# --- TSM -----------------------------------------------------------------------------------


def test_temporal_shift_hand_computed() -> None:
    # 2 clips x 3 frames, 8 channels, 1x1 pixel; x[n, t, c] = 100 n + 10 t + c. fold = 8 // 4 = 2.
    x = torch.tensor(
        [[[100.0 * n + 10 * t + c for c in range(8)] for t in range(3)] for n in range(2)]
    )
    out = temporal_shift(x.view(6, 8, 1, 1), n_segment=3, shift_div=4).view(2, 3, 8)
    expected = torch.tensor(
        [
            [
                [10, 11, 0, 0, 4, 5, 6, 7],
                [20, 21, 2, 3, 14, 15, 16, 17],
                [0, 0, 12, 13, 24, 25, 26, 27],
            ],
            [
                [110, 111, 0, 0, 104, 105, 106, 107],
                [120, 121, 102, 103, 114, 115, 116, 117],
                [0, 0, 112, 113, 124, 125, 126, 127],
            ],
        ],
        dtype=torch.float32,
    )
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="multiple"):
        temporal_shift(x.view(6, 8, 1, 1), n_segment=4)


def test_tsm_mixes_frames_and_loads_plain_resnet_weights() -> None:
    frame, tsm = tiny("resnet_tiny").eval(), tiny("tsm_tiny", seed=3).eval()
    tsm.load_state_dict(frame.state_dict())  # strict: same keys and shapes as the plain ResNet
    x = clip_for(tsm)
    with torch.no_grad():
        y, y_rev = tsm.forward_features(x), tsm.forward_features(x.flip(2))
        y_frame = frame.forward_features(x)
    assert not torch.allclose(y, y_rev, atol=1e-5)  # frame order matters
    assert not torch.allclose(y, y_frame, atol=1e-5)
    # Shifting is per clip: each clip of a batch gives what it gives alone.
    with torch.no_grad():
        alone = torch.cat([tsm.forward_features(x[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(y, alone)


# --- cross-modality first conv -------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet_tiny", "r2plus1d_tiny"])
@pytest.mark.parametrize("channels", [2, 10])
def test_adapt_first_conv_is_the_channel_averaged_rgb_conv(name: str, channels: int) -> None:
    rgb = tiny(name).eval()
    adapted = copy.deepcopy(rgb)
    conv = adapt_first_conv(adapted, channels)
    assert conv.in_channels == channels
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, 4, 32, 32, generator=g)
    # sum_j mean_c(w_c) x_j = sum_c w_c (sum_j x_j / 3): the RGB conv on a grey image.
    grey = (x.sum(dim=1, keepdim=True) / 3).expand(-1, 3, -1, -1, -1)
    if rgb.info.kind == "frame2d":
        x, grey = x[:, :, 0], grey[:, :, 0]
    first_rgb = rgb.conv1 if rgb.info.kind == "frame2d" else rgb.stem[0]
    with torch.no_grad():
        torch.testing.assert_close(conv(x), first_rgb(grey))
        # Whole net, constant input v on C channels == RGB net on constant v * C / 3.
        v = 0.7
        const = torch.full((1, channels, 4, 32, 32), v)
        rgb_const = torch.full((1, 3, 4, 32, 32), v * channels / 3)
        adapted.info = adapted.info.with_input_channels(channels)
        torch.testing.assert_close(adapted(const), rgb(rgb_const))


def test_in_channels_builds_a_flow_backbone() -> None:
    model = tiny("r2plus1d_tiny", in_channels=2)
    assert model.input_channels == 2 and model.info.modality == "flow"
    assert len(model.info.mean) == 2 and model.stem[0].in_channels == 2
    assert model(clip_for(model)).shape == (2, 64)
    with pytest.raises(ValueError, match="not the conv itself"):
        adapt_first_conv(nn.Conv2d(3, 4, 3), 2)


# --- checkpoints ---------------------------------------------------------------------------


def test_weights_round_trip_and_checksum(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tiny("r2plus1d_tiny", num_classes=4).eval()
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    loaded = tiny("r2plus1d_tiny", seed=9, weights=path, num_classes=4).eval()
    x = clip_for(source)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    assert (
        loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)
    )
    with caplog.at_level(logging.WARNING, logger="extract.backbones.registry"):
        assert tiny("r2plus1d_tiny").weights_sha256 is None
    assert "randomly initialised" in caplog.text


def test_checkpoint_dict_module_prefix_and_classifier_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tiny("resnet_tiny", num_classes=4).eval()
    wrapped = {"epoch": 3, "model": {f"module.{k}": v for k, v in source.state_dict().items()}}
    path = tmp_path / "ckpt.pt"
    torch.save(wrapped, path)
    x = clip_for(source)
    features_only = tiny("resnet_tiny", seed=5, weights=path).eval()  # fc.* skipped
    other_classes = tiny("resnet_tiny", seed=5, num_classes=7)
    with caplog.at_level(logging.WARNING, logger="extract.backbones.weights"):
        load_weights(other_classes, path)
    assert "fc.weight skipped" in caplog.text
    with torch.no_grad():
        assert torch.equal(features_only(x), source.forward_features(x))
        assert torch.equal(other_classes.eval().forward_features(x), source.forward_features(x))
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state}, path)  # old torchvision files have no BN counters
    load_weights(tiny("resnet_tiny"), path)


def test_rgb_checkpoint_into_flow_backbone_averages_the_first_conv(tmp_path: Path) -> None:
    source = tiny("resnet_tiny")
    path = tmp_path / "rgb.pth"
    torch.save(source.state_dict(), path)
    flow = tiny("resnet_tiny", seed=2, in_channels=2, weights=path)
    expected = source.conv1.weight.mean(dim=1, keepdim=True).expand(-1, 2, -1, -1)
    assert torch.equal(flow.conv1.weight, expected)
    assert torch.equal(flow.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_wrong_checkpoints_give_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(tiny("resnet_tiny").state_dict(), path)
    with pytest.raises(
        WeightsError, match=r"missing \(\d+\): stem\.0\.weight.*unexpected \(\d+\): conv1"
    ):
        get_backbone("r2plus1d_tiny", weights=path)
    with pytest.raises(WeightsError, match=r"shape mismatch .*conv1\.weight"):
        load_weights(get_backbone("resnet18"), path)
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a checkpoint\n")
    with pytest.raises(WeightsError, match=r"notes.txt is a text file \(first line 'not a chec"):
        load_weights(tiny("resnet_tiny"), garbage)
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tiny("resnet_tiny"), tmp_path / "absent.pth")
    torch.save([1, 2], garbage)
    with pytest.raises(WeightsError, match="not a state_dict"):
        load_weights(tiny("resnet_tiny"), garbage)


def test_variant_tables_give_named_builders_with_overridable_defaults() -> None:
    from extract.backbones.registry import _BACKBONES
    from extract.backbones.tsm import VARIANTS

    assert {"tsm_resnet18", "tsm_resnet50", "tsm_tiny"} <= set(VARIANTS) <= set(list_backbones())
    builder = _BACKBONES["tsm_tiny"]
    assert builder.__name__ == "tsm_tiny" and builder.__doc__ == VARIANTS["tsm_tiny"]["doc"]
    params = inspect.signature(builder).parameters
    assert params["clip_len"].default == 4 and params["shift_div"].default == 8  # the entry's default, the family's
    assert "arch" not in params and "input_size" not in params  # the numbers the entry fixes
    assert get_backbone("tsm_tiny").info.clip_len == 4 and get_backbone("tsm_tiny", clip_len=6).info.clip_len == 6
    with pytest.raises(TypeError, match="fixes"):
        builder(arch="resnet50")
