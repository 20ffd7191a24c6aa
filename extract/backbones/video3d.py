"""3D clip backbones from torchvision: R(2+1)D-18, R3D-18 and MC3-18 (Tran et al. 2018).

Built with ``weights=None``; ``forward_features`` returns the pooled 512-d clip feature and
the classifier is our optional ``fc`` (torchvision's key layout, so torchvision's Kinetics-400
files load unchanged: ``@kinetics400``, the default, registered from torchvision's enums).
Defaults follow torchvision's Kinetics recipe: 16-frame clips, 112 px crops, Kinetics mean/std.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models.video import resnet as tv_video

from extract.backbones._narrow import NarrowVideoResNet, video_stem
from extract.backbones.pretrained import from_torchvision, register_all
from extract.backbones.registry import (
    KINETICS_MEAN,
    KINETICS_STD,
    Backbone,
    BackboneInfo,
    register_backbone,
)
from extract.backbones.variants import register_variants

__all__ = ["VARIANTS", "VideoResNetBackbone"]

_TRUNK_NAMES = ("stem", "layer1", "layer2", "layer3", "layer4", "avgpool")
#: Widths of the tiny test variants (BasicBlock, one block per stage).
TINY_WIDTHS = (8, 16, 32, 64)
TINY_INPUT_SIZE = 32
TINY_CLIP_LEN = 4

# Per architecture: torchvision builder, and the conv makers / stem of the tiny twin.
_ARCHS: dict[str, tuple[Callable[..., tv_video.VideoResNet], list[type[nn.Module]], str]] = {
    "r2plus1d": (tv_video.r2plus1d_18, [tv_video.Conv2Plus1D] * 4, "2plus1d"),
    "r3d": (tv_video.r3d_18, [tv_video.Conv3DSimple] * 4, "3d"),
    "mc3": (tv_video.mc3_18, [tv_video.Conv3DSimple] + [tv_video.Conv3DNoTemporal] * 3, "3d"),
}


class VideoResNetBackbone(Backbone):
    """A torchvision VideoResNet trunk: ``(B, C, T, H, W)`` clip -> ``(B, D)`` feature."""

    stage_names = (("stem",), ("layer1",), ("layer2",), ("layer3",), ("layer4",))

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: 3D trunk, global average pool."""
        self.check_input(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.avgpool(x).flatten(1)  # (B, D, t, h, w) -> (B, D)


def _video_backbone(
    name: str,
    arch: str,
    tiny: bool,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int | None = None,
) -> VideoResNetBackbone:
    """A VideoResNet of family ``arch`` (``_ARCHS``), full size or the tiny twin."""
    builder, conv_makers, stem = _ARCHS[arch]
    if tiny:
        net: tv_video.VideoResNet = NarrowVideoResNet(
            tv_video.BasicBlock,
            conv_makers,
            [1, 1, 1, 1],
            video_stem(stem, TINY_WIDTHS[0]),
            TINY_WIDTHS,
        )
        feature_dim, input_size, default_len = TINY_WIDTHS[-1], TINY_INPUT_SIZE, TINY_CLIP_LEN
    else:
        net = builder(weights=None)  # never downloads
        feature_dim, input_size, default_len = net.fc.in_features, 112, 16
    info = BackboneInfo(
        name=name,
        kind="clip3d",
        feature_dim=feature_dim,
        clip_len=default_len if clip_len is None else clip_len,
        input_size=input_size,
        mean=KINETICS_MEAN,
        std=KINETICS_STD,
    ).with_input_channels(in_channels, modality)
    trunk = {n: getattr(net, n) for n in _TRUNK_NAMES}
    return VideoResNetBackbone(info, trunk, num_classes=num_classes, dropout=dropout)


VARIANTS: dict[str, dict] = {
    "r2plus1d_18": {"doc": "R(2+1)D-18: (2+1)D factorised convs, D=512, 16x112x112 clips, Kinetics normalisation.",
                    "arch": "r2plus1d", "tiny": False},
    "r3d_18": {"doc": "R3D-18: full 3x3x3 convs, D=512, 16x112x112 clips, Kinetics normalisation.",
               "arch": "r3d", "tiny": False},
    "mc3_18": {"doc": "MC3-18: 3D convs in the first stage, 2D after, D=512, 16x112x112 clips.",
               "arch": "mc3", "tiny": False},
    "r2plus1d_tiny": {"doc": "Test / CPU-smoke variant: R(2+1)D code path, widths 8..64, D=64, 4x32x32 clips.",
                      "arch": "r2plus1d", "tiny": True},
    "r3d_tiny": {"doc": "Test / CPU-smoke variant: R3D code path, widths 8..64, D=64, 4x32x32 clips.",
                 "arch": "r3d", "tiny": True},
    "mc3_tiny": {"doc": "Test / CPU-smoke variant: MC3 code path, widths 8..64, D=64, 4x32x32 clips.",
                 "arch": "mc3", "tiny": True},
}
register_variants(register_backbone, _video_backbone, VARIANTS)
for _name, _enum in (
    ("r2plus1d_18", tv_video.R2Plus1D_18_Weights),
    ("r3d_18", tv_video.R3D_18_Weights),
    ("mc3_18", tv_video.MC3_18_Weights),
):
    register_all(from_torchvision(_name, _enum, feature_dim=512))
