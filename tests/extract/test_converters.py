"""Checkpoint converters against their reference implementations (pytorchvideo, torchvggish, TSM's code).

Each test fills a reference model with random values (its own init, BatchNorm scales, shifts
and running statistics drawn at random so that no layer is an identity), saves its state dict
in the source's file layout, loads that file into our backbone with ``get_backbone(name,
weights=PATH)`` (which applies the converter) and checks that both give the same features
(the layer before the classifier) and logits on the same clip, to 1e-4, in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorchvideo.layers.nonlocal_net as pv_nonlocal  # test-only references (the dev extra)
import pytorchvideo.models.hub as pv_hub
import torch
import torchvggish.torchvggish as tvggish
from torch import Tensor, nn
from torchvision.models import resnet50

from extract.backbones import WeightsError, file_sha256, get_backbone, temporal_shift
from extract.backbones.converters import (
    converter_for,
    get_converter,
    list_converters,
    pyslowfast,
    pytorchvideo,
    torchvggish,
    tsm,
)
from extract.backbones.pretrained import list_weights

ATOL = 1e-4


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm affine parameters and statistics (the init makes them identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def clip(frames: int, size: int, seed: int = 7) -> Tensor:
    return torch.randn(1, 3, frames, size, size, generator=torch.Generator().manual_seed(seed))


def save(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def assert_same(ours: Tensor, reference: Tensor) -> None:
    assert ours.shape == reference.shape
    assert reference.abs().max() > 1e-2  # not a degenerate comparison
    torch.testing.assert_close(ours, reference, atol=ATOL, rtol=0)


def pytorchvideo_features(net: nn.Module, x: object) -> Tensor:
    """The input of a pytorchvideo ``Net``'s last block (its head's projection), pooled."""
    for block in net.blocks[:-1]:
        x = block(x)
    return x.mean(dim=(2, 3, 4)) if x.ndim == 5 else x.flatten(1)  # (B, D, t, h, w) -> (B, D)


# --- pytorchvideo: SlowFast R50 8x8, I3D R50 8x8 -----------------------------------------------


def cached(backbone: str, name: str, obj: object) -> Path:
    """Save ``obj`` where the named weight's download lands (a temporary TORCH_HOME)."""
    entry = next(e for e in list_weights(backbone) if e.name == name)
    path = entry.cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def test_pytorchvideo_slowfast_r50_matches_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    # the hub builder's architecture; global average pooling so that a 32 px clip fits the head
    reference = randomize(pv_hub.slowfast_r50(pretrained=False, head_pool=nn.AdaptiveAvgPool3d), 1)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path = cached("slowfast_8x8_r50", "kinetics400", {"model_state": reference.state_dict(), "epoch": 196})
    assert path.name == "SLOWFAST_8x8_R50.pyth"
    ours = get_backbone("slowfast_8x8_r50", weights="kinetics400", num_classes=400).eval()  # the named weight
    assert ours.weights_record["sha256"] == file_sha256(path) == ours.weights_sha256
    x = clip(32, 32)
    slow = x.index_select(2, torch.linspace(0, 31, 8).long())  # PySlowFast's PackPathway
    assert slow[0, 0, :, 0, 0].tolist() == x[0, 0, [0, 4, 8, 13, 17, 22, 26, 31], 0, 0].tolist()
    with torch.no_grad():
        assert_same(ours.forward_features(x), pytorchvideo_features(reference, [slow, x]))
        assert_same(ours(x), reference([slow, x]))


def test_pytorchvideo_i3d_r50_matches_the_reference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = randomize(pv_hub.i3d_r50(pretrained=False, head_pool=nn.AdaptiveAvgPool3d), 2)
    path = save(tmp_path, "I3D_8x8_R50.pyth", {"model_state": reference.state_dict()})
    ours = get_backbone("i3d_8x8_r50", weights=path, num_classes=400).eval()
    x = clip(8, 32)
    with torch.no_grad():
        assert_same(ours.forward_features(x), pytorchvideo_features(reference, x))
        assert_same(ours(x), reference(x))
        # the older variant (replicated temporal padding) is another function of the same weights
        other = get_backbone("i3d_nl_r50", num_classes=400, nonlocal_at=((), (), (), ())).eval()
        other.load_state_dict(pytorchvideo.convert(reference.state_dict()))
        assert (other(x) - reference(x)).abs().max() > 1e-3


# --- PySlowFast: I3D NLN R50 8x8 ---------------------------------------------------------------

NONLOCAL_AT = {3: (1, 3), 4: (1, 3, 5)}  # pytorchvideo block index (res3, res4) -> blocks followed by one


def i3d_nln_reference() -> nn.Module:
    """pytorchvideo's I3D R50 with pytorchvideo's NonLocal (PySlowFast's code) after the NLN blocks."""
    net = pv_hub.i3d_r50(pretrained=False, head_pool=nn.AdaptiveAvgPool3d)
    for index, blocks in NONLOCAL_AT.items():
        stage = net.blocks[index].res_blocks
        for i in blocks:
            dim = stage[i].branch2.conv_c.out_channels
            nl = pv_nonlocal.create_nonlocal(dim_in=dim, dim_inner=dim // 2, pool_size=(1, 2, 2),
                                              instantiation="softmax")
            stage[i] = nn.Sequential(stage[i], nl)
    return net


def pyslowfast_key(key: str) -> str:
    """The PySlowFast name of a key of :func:`i3d_nln_reference` (slowfast/models/*_helper.py)."""
    stem = {"blocks.0.conv.": "s1.pathway0_stem.conv.", "blocks.0.norm.": "s1.pathway0_stem.bn.",
            "blocks.6.proj.": "head.projection."}
    for old, new in stem.items():
        if key.startswith(old):
            return new + key[len(old):]
    index, _, i, *rest = key.split(".")[1:]
    stage = {"1": 2, "3": 3, "4": 4, "5": 5}[index]
    rest = ".".join(rest)
    if rest.startswith("1."):  # the NonLocal after block i
        rest = rest[2:].replace("norm.", "bn.")
        return f"s{stage}.pathway0_nonlocal{i}.{rest}"
    rest = rest.removeprefix("0.")  # the block itself when it is wrapped with a NonLocal
    for old, new in (("branch1_conv", "branch1"), ("branch1_norm", "branch1_bn"), ("conv_a", "a"),
                     ("norm_a", "a_bn"), ("conv_b", "b"), ("norm_b", "b_bn"), ("conv_c", "c"), ("norm_c", "c_bn")):
        rest = rest.replace(old, new)
    return f"s{stage}.pathway0_res{i}.{rest}"


def test_pyslowfast_i3d_nln_r50_matches_the_reference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = randomize(i3d_nln_reference(), 3)
    state = {pyslowfast_key(k): v for k, v in reference.state_dict().items()}
    assert len(state) == len(reference.state_dict()) == len(pyslowfast.I3D_NLN_TABLE)
    assert {"s3.pathway0_nonlocal1.conv_theta.weight", "s4.pathway0_nonlocal5.bn.running_var",
            "s2.pathway0_res0.branch1_bn.weight", "s5.pathway0_res2.branch2.c.weight"} <= set(state)
    path = save(tmp_path, "checkpoint_epoch_00196.pyth", {"model_state": state, "cfg": "MODEL:\n  ARCH: i3d"})
    ours = get_backbone("i3d_nln_8x8_r50", weights=path, num_classes=400).eval()
    x = clip(8, 64)  # res3 at 8x8, res4 at 4x4: the non-local blocks pool and attend over several positions
    with torch.no_grad():
        assert_same(ours.forward_features(x), pytorchvideo_features(reference, x))
        assert_same(ours(x), reference(x))


# --- TSM ResNet-50 -------------------------------------------------------------------------------


def tsm_shift(x: Tensor, n_segment: int, fold_div: int) -> Tensor:
    """``TemporalShift.shift`` of ops/temporal_shift.py (mit-han-lab/temporal-shift-module), not in place."""
    nt, c, h, w = x.size()
    x = x.view(nt // n_segment, n_segment, c, h, w)
    fold = c // fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # shift left
    out[:, 1:, fold: 2 * fold] = x[:, :-1, fold: 2 * fold]  # shift right
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]  # not shift
    return out.view(nt, c, h, w)


class TemporalShift(nn.Module):
    """TSM's wrapper: the shift, then the wrapped conv (stored as ``net``)."""

    def __init__(self, net: nn.Module, n_segment: int, n_div: int = 8) -> None:
        super().__init__()
        self.net, self.n_segment, self.fold_div = net, n_segment, n_div

    def forward(self, x: Tensor) -> Tensor:
        return self.net(tsm_shift(x, self.n_segment, self.fold_div))


class TSN(nn.Module):
    """ops/models.py's TSN for TSM ResNet-50: shifted ``base_model``, dropout as its fc, ``new_fc``, average."""

    def __init__(self, n_segment: int, num_classes: int) -> None:
        super().__init__()
        self.n_segment = n_segment
        self.base_model = resnet50(weights=None)
        for layer in (self.base_model.layer1, self.base_model.layer2, self.base_model.layer3, self.base_model.layer4):
            for block in layer:  # make_temporal_shift(place="blockres"), n_round 1 for ResNet-50
                block.conv1 = TemporalShift(block.conv1, n_segment)
        self.base_model.fc = nn.Dropout(0.5)
        self.new_fc = nn.Linear(2048, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W)`` -> per-frame pooled features averaged over T."""
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # TSN's input view (-1, 3, H, W)
        return self.base_model(frames).view(b, t, -1).mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        scores = self.new_fc(self.base_model(frames))  # (B*T, classes)
        return scores.view(b, t, -1).mean(dim=1)  # ConsensusModule("avg")


class DataParallelLike(nn.Module):
    """Holds the model as ``module``, as ``nn.DataParallel`` does (the released files' ``module.`` prefix)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def test_tsm_shift_is_the_authors_shift_by_hand_and_by_their_code() -> None:
    # 1 clip x 3 frames x 4 channels, 1 pixel, x[t, c] = 10 t + c; fold = 4 // 4 = 1
    x = torch.tensor([[10.0 * t + c for c in range(4)] for t in range(3)]).view(3, 4, 1, 1)
    by_hand = torch.tensor([[10, 0, 2, 3], [20, 1, 12, 13], [0, 11, 22, 23]], dtype=torch.float32)
    torch.testing.assert_close(temporal_shift(x, n_segment=3, shift_div=4).view(3, 4), by_hand)
    torch.testing.assert_close(tsm_shift(x, 3, 4).view(3, 4), by_hand)
    y = torch.randn(2 * 8, 64, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(temporal_shift(y, n_segment=8, shift_div=8), tsm_shift(y, 8, 8), atol=0, rtol=0)


def test_tsm_resnet50_matches_the_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    reference = randomize(TSN(n_segment=8, num_classes=400), 4)
    state = DataParallelLike(reference).state_dict()
    published = {"module.base_model.conv1.weight", "module.base_model.layer1.0.conv1.net.weight",
                 "module.base_model.layer4.2.bn3.running_var", "module.base_model.layer2.0.downsample.0.weight",
                 "module.new_fc.weight", "module.new_fc.bias"}  # key names of the released files
    assert published <= set(state) and not any(".fc." in k for k in state)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached("tsm_resnet50", "kinetics400", {"epoch": 50, "arch": "resnet50", "state_dict": state, "best_prec1": 71.2})
    alias = "tsm:TSM_kinetics_RGB_resnet50_shift8_blockres_avg_segment8_e50"  # the prefixed spelling
    ours = get_backbone("tsm_resnet50", weights=alias, num_classes=400).eval()
    x = clip(8, 32)
    with torch.no_grad():
        assert_same(ours.forward_features(x), reference.features(x))
        assert_same(ours(x), reference(x))
        # the converted state dict saved in our layout loads as it is (no conversion)
        again = save(tmp_path, "ours.pt", ours.state_dict())
        torch.testing.assert_close(get_backbone("tsm_resnet50", weights=again, num_classes=400).eval()(x), ours(x))


# --- torchvggish ---------------------------------------------------------------------------------


def test_torchvggish_matches_the_reference_before_pca() -> None:
    # no file here: the 72M-parameter state dict would be a 290 MB write; get_backbone's file
    # path is the one the other converters' tests take
    torch.manual_seed(0)
    reference = tvggish.VGG(tvggish.make_layers(), postprocess=False).eval()  # random init, no PCA
    converted = torchvggish.convert(reference.state_dict())
    ours = get_backbone("vggish_relu").eval()
    ours.load_state_dict(converted)
    patches = torch.randn(3, 1, 96, 64, generator=torch.Generator().manual_seed(5))  # log-mel patches
    with torch.no_grad():
        expected = reference(patches)
        assert_same(ours(patches), expected)
        # plain vggish (no final ReLU) takes the same weights and gives the embedding before the ReLU
        plain = get_backbone("vggish").eval()
        plain.load_state_dict(converted)
        before_relu = plain(patches)
        assert (before_relu < 0).any()
        torch.testing.assert_close(before_relu.relu(), expected, atol=ATOL, rtol=0)


# --- tables and refusals -------------------------------------------------------------------------


def test_tables_are_one_to_one_onto_our_state_dicts() -> None:
    for module in (pytorchvideo, pyslowfast, tsm, torchvggish):
        for backbone, table in module.TABLES.items():
            assert backbone in module.URLS
            ours = set(get_backbone(backbone, num_classes=400 if backbone != "vggish_relu" else None).state_dict())
            assert len(set(table.values())) == len(table)  # no two of theirs onto one of ours
            assert set(table.values()) == ours, backbone


@pytest.mark.parametrize("name", ["pytorchvideo", "pyslowfast", "tsm", "torchvggish"])
def test_missing_and_extra_tensors_are_refused_on_one_line(name: str) -> None:
    module = {"pytorchvideo": pytorchvideo, "pyslowfast": pyslowfast, "tsm": tsm, "torchvggish": torchvggish}[name]
    table = next(iter(module.TABLES.values()))
    state = {k: torch.zeros(1) for k in table}
    assert set(get_converter(name)(state)) == set(table.values())
    dropped = [k for k in table if k.endswith("weight")][1]
    less = {k: v for k, v in state.items() if k != dropped}
    with pytest.raises(WeightsError, match=rf"missing \(1\): {dropped}$") as err:
        get_converter(name)(less)
    assert "\n" not in str(err.value)
    more = {**state, "extra.weight": torch.zeros(1), "extra.bias": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"unexpected \(2\): extra.weight, extra.bias") as err:
        get_converter(name)(more)
    assert "\n" not in str(err.value)
    # BatchNorm step counters carry no weights: files without them convert
    counters = [k for k in table if k.endswith("num_batches_tracked")]
    assert get_converter(name)({k: v for k, v in state.items() if k not in counters})


def test_a_broken_file_fails_in_get_backbone_with_the_path(tmp_path: Path) -> None:
    state = {k: torch.zeros(1) for k in pytorchvideo.SLOWFAST_TABLE if "fuse" not in pytorchvideo.SLOWFAST_TABLE[k]}
    path = save(tmp_path, "cut.pyth", {"model_state": state})
    with pytest.raises(WeightsError, match=r"cut.pyth: not a pytorchvideo SlowFast R50 .* missing \(20\): "
                                           r"blocks.0.multipathway_fusion.conv_fast_to_slow.weight"):
        get_backbone("slowfast_8x8_r50", weights=path)


def test_converter_lookup() -> None:
    assert list_converters() == ["pyslowfast", "pytorchvideo", "torchvggish", "tsm"]
    assert converter_for("r2plus1d_18") is None
    assert converter_for("tsm_resnet50") is not None
    with pytest.raises(WeightsError, match="unknown checkpoint converter 'mmaction'; available: pyslowfast"):
        get_converter("mmaction")
    with pytest.raises(WeightsError, match="neither blocks.0.multipathway_blocks.0.conv.weight nor"):
        pytorchvideo.convert({"conv1.weight": torch.zeros(1)})
