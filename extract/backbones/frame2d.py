"""TSN-style frame backbones: torchvision ResNet-18/50/101 applied to single frames.

Their named weights are torchvision's ImageNet ones (``@imagenet1k``, ``@imagenet1k_v2``;
the default is torchvision's ``DEFAULT``), read from torchvision's enums.

Temporal Segment Networks (Wang et al. 2016) sample K frames per video and run a 2D net on
each; the store keeps one feature per sampled frame (the K axis), so these backbones are
``kind="frame2d"`` with ``clip_len=1``. Given ``(B, C, T, H, W)`` with ``T > 1`` they return
the mean of the T per-frame features (a TSN consensus inside one clip).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from extract.backbones._narrow import NarrowResNet
from extract.backbones.pretrained import from_torchvision, register_all
from extract.backbones.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    BackboneInfo,
    register_backbone,
)
from extract.backbones.variants import register_variants

__all__ = ["VARIANTS", "FrameBackbone", "FrameResNet", "resnet_trunk"]

_TRUNK_NAMES = (
    "conv1",
    "bn1",
    "relu",
    "maxpool",
    "layer1",
    "layer2",
    "layer3",
    "layer4",
    "avgpool",
)
#: Widths of the tiny test variant (BasicBlock, one block per stage).
TINY_WIDTHS = (8, 16, 32, 64)
TINY_INPUT_SIZE = 32
#: The small-frame variant: widths, stage strides, crop (BasicBlock, one block per stage, stride-1 stem).
SMALL_WIDTHS = (16, 32, 32, 32)
SMALL_STRIDES = (2, 2, 1, 1)
SMALL_INPUT_SIZE = 56

_TORCHVISION_RESNETS: dict[str, Callable[..., tv_resnet.ResNet]] = {
    "resnet18": tv_resnet.resnet18,
    "resnet50": tv_resnet.resnet50,
    "resnet101": tv_resnet.resnet101,
}


def resnet_trunk(arch: str) -> tuple[dict[str, nn.Module], int]:
    """The modules of a randomly initialised torchvision ResNet, without its classifier.

    Args:
        arch: ``"resnet18"``, ``"resnet50"``, ``"resnet101"``, ``"tiny"`` (BasicBlock,
            one block per stage, widths :data:`TINY_WIDTHS`) or ``"small"`` (for frames of a
            few dozen pixels with small objects: BasicBlock, one block per stage, widths
            :data:`SMALL_WIDTHS`, a 3x3 stride-1 stem without max-pool (it filters every pixel:
            1-px stripes are seen before anything subsamples them), stage strides
            :data:`SMALL_STRIDES`, so a 56-px crop ends on a 14x14 map, and global max
            pooling, so an object a few pixels wide is not averaged away).

    Returns:
        The modules by torchvision name (``conv1`` ... ``avgpool``) and the feature dim.
    """
    if arch == "tiny":
        net: tv_resnet.ResNet = NarrowResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], TINY_WIDTHS)
    elif arch == "small":
        net = NarrowResNet(tv_resnet.BasicBlock, [1, 1, 1, 1], SMALL_WIDTHS, small_stem=True, stem_stride=1,
                           strides=SMALL_STRIDES,
                           global_pool="max")
    elif arch in _TORCHVISION_RESNETS:
        net = _TORCHVISION_RESNETS[arch](weights=None)  # never downloads
    else:
        raise ValueError(f"unknown ResNet {arch!r}; use one of {[*_TORCHVISION_RESNETS, 'tiny', 'small']}")
    trunk = {name: getattr(net, name) for name in _TRUNK_NAMES}
    block = net.layer4[-1]
    feature_dim = block.bn3.num_features if hasattr(block, "bn3") else block.bn2.num_features
    return trunk, feature_dim


class FrameBackbone(Backbone):
    """A 2D image model run on every frame of a clip; features averaged over the frames.

    Subclasses implement :meth:`frame_features` (``FrameResNet`` here, the timm and
    open_clip frame encoders in :mod:`extract.backbones.timm_frames` and
    :mod:`extract.backbones.clip_frames`).
    """

    @abc.abstractmethod
    def frame_features(self, frames: Tensor) -> Tensor:
        """``(N, C, H, W)`` normalised frames -> ``(N, D)`` pooled features."""

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: per-frame features, mean over T."""
        self.check_input(x)
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # (B, C, T, H, W) -> (B*T, C, H, W)
        feats = self.frame_features(frames)  # (B*T, C, H, W) -> (B*T, D)
        return feats.view(b, t, -1).mean(dim=1)  # (B*T, D) -> (B, D)


class FrameResNet(FrameBackbone):
    """A 2D ResNet run on every frame; features averaged over the frames of a clip."""

    stage_names = (
        ("conv1", "bn1", "relu", "maxpool"),
        ("layer1",),
        ("layer2",),
        ("layer3",),
        ("layer4",),
    )

    def frame_features(self, frames: Tensor) -> Tensor:
        """``(N, C, H, W)`` normalised frames -> ``(N, D)`` pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(frames))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)  # (N, D, h, w) -> (N, D)


def _frame_resnet(
    name: str,
    arch: str,
    input_size: int,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
) -> FrameResNet:
    """A torchvision ResNet trunk (``arch``, or the tiny one) applied per frame."""
    trunk, feature_dim = resnet_trunk(arch)
    info = BackboneInfo(
        name=name,
        kind="frame2d",
        feature_dim=feature_dim,
        clip_len=1,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ).with_input_channels(in_channels, modality)
    return FrameResNet(info, trunk, num_classes=num_classes, dropout=dropout)


VARIANTS: dict[str, dict] = {
    "resnet18": {"doc": "ResNet-18 per frame (TSN), D=512, 224 px crops, ImageNet normalisation.",
                 "arch": "resnet18", "input_size": 224},
    "resnet50": {"doc": "ResNet-50 per frame (TSN), D=2048, 224 px crops, ImageNet normalisation.",
                 "arch": "resnet50", "input_size": 224},
    "resnet101": {"doc": "ResNet-101 per frame (TSN), D=2048, 224 px crops, ImageNet normalisation.",
                  "arch": "resnet101", "input_size": 224},
    "resnet_tiny": {"doc": "Test / CPU-smoke variant: the ResNet code path with widths 8..64, D=64, 32 px crops.",
                    "arch": "tiny", "input_size": TINY_INPUT_SIZE},
}
register_variants(register_backbone, _frame_resnet, VARIANTS)

#: torchvision's ImageNet weights per ResNet (also the bodies of TSM and TIN, and of audio ResNets).
IMAGENET_WEIGHTS = {
    "resnet18": (tv_resnet.ResNet18_Weights, 512),
    "resnet34": (tv_resnet.ResNet34_Weights, 512),
    "resnet50": (tv_resnet.ResNet50_Weights, 2048),
    "resnet101": (tv_resnet.ResNet101_Weights, 2048),
}
for _arch in ("resnet18", "resnet50", "resnet101"):
    register_all(from_torchvision(_arch, IMAGENET_WEIGHTS[_arch][0], feature_dim=IMAGENET_WEIGHTS[_arch][1]))
