"""torchvision's ResNet and VideoResNet with the stage widths as a parameter.

torchvision hard-codes the widths 64/128/256/512. The tiny test variants need a few
channels, so these subclasses repeat torchvision's constructors with ``widths`` instead and
otherwise run torchvision's own code: its blocks (``BasicBlock``, ``Bottleneck``,
``Conv2Plus1D``, ...), its ``_make_layer`` and its init. The module names, and hence the
state_dict layout, are those of the full-size models.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.video import resnet as tv_video


def _init_like_torchvision(model: nn.Module) -> None:
    """torchvision's ResNet init: Kaiming (fan_out) convs, unit BatchNorm."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class NarrowResNet(tv_resnet.ResNet):
    """``torchvision.models.ResNet`` with stage widths ``widths`` (no dilation, no groups)."""

    def __init__(
        self,
        block: type[tv_resnet.BasicBlock | tv_resnet.Bottleneck],
        layers: Sequence[int],
        widths: Sequence[int],
        *,
        small_stem: bool = False,
        stem_stride: int = 2,
        strides: Sequence[int] = (1, 2, 2, 2),
        global_pool: str = "avg",
    ) -> None:
        """Args as torchvision's ``ResNet``, with ``widths`` per stage, plus:

        Args:
            small_stem: a 3x3 first conv of stride ``stem_stride`` and no stem max-pool (a 2x
                or no reduction instead of torchvision's 4x), for frames of a few dozen pixels.
            stem_stride: the small stem's stride (1: the first conv sees every pixel, so a
                texture of 1-px stripes is filtered before anything subsamples it).
            strides: the stride of each of the four stages.
            global_pool: ``"avg"`` (torchvision) or ``"max"`` (the strongest response of
                each channel anywhere in the frame: a small object is not averaged away).
        """
        nn.Module.__init__(self)  # torchvision's __init__ would build the 64..512 net
        if global_pool not in ("avg", "max"):
            raise ValueError(f"global_pool must be 'avg' or 'max', got {global_pool!r}")
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = widths[0]
        self.dilation = 1
        self.groups = 1
        self.base_width = 64
        if small_stem:
            self.conv1 = nn.Conv2d(3, widths[0], kernel_size=3, stride=stem_stride, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, widths[0], layers[0], stride=strides[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=strides[1])
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=strides[2])
        self.layer4 = self._make_layer(block, widths[3], layers[3], stride=strides[3])
        # the module keeps torchvision's name: no parameters, so the state_dict is unchanged
        self.avgpool = nn.AdaptiveMaxPool2d((1, 1)) if global_pool == "max" else nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        _init_like_torchvision(self)


def video_stem(conv: str, width: int) -> nn.Sequential:
    """torchvision's ``R2Plus1dStem`` (``conv="2plus1d"``) or ``BasicStem`` with ``width`` outputs."""
    if conv == "2plus1d":
        mid = max(1, width * 45 // 64)  # torchvision: 45 mid channels for 64 outputs
        return nn.Sequential(
            nn.Conv3d(
                3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False
            ),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(
                mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False
            ),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv3d(3, width, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


class NarrowVideoResNet(tv_video.VideoResNet):
    """``torchvision.models.video.VideoResNet`` with stage widths ``widths``."""

    def __init__(
        self,
        block: type[tv_video.BasicBlock | tv_video.Bottleneck],
        conv_makers: Sequence[type[nn.Module]],
        layers: Sequence[int],
        stem: nn.Module,
        widths: Sequence[int],
    ) -> None:
        nn.Module.__init__(self)  # torchvision's __init__ would build the 64..512 net
        self.inplanes = widths[0]
        self.stem = stem
        self.layer1 = self._make_layer(block, conv_makers[0], widths[0], layers[0], stride=1)
        self.layer2 = self._make_layer(block, conv_makers[1], widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, conv_makers[2], widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, conv_makers[3], widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Identity()
        _init_like_torchvision(self)
