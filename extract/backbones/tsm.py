"""TSM: a 2D ResNet with temporal shifts (Lin, Gan and Han, ICCV 2019).

Residual shift: before the first convolution of every residual block, a fraction of the
channels is moved one frame along time, zero padded at the ends, so a 2D net mixes the T
frames of a clip at no extra cost::

    x (B, C, T, H, W) -> frames (B*T, C, H, W) -> stem -> [block: shift -> conv1 -> ...] x N
                      -> pooled (B*T, D) -> mean over T -> (B, D)

With ``shift_div = 8`` and C channels, ``fold = C // 8``: channels ``[0, fold)`` of frame t
take frame t+1's values (the last frame gets zeros), channels ``[fold, 2*fold)`` take
frame t-1's values (the first frame gets zeros), the rest stay. The shifting conv is a
``Conv2d`` subclass, so the state_dict has plain ResNet keys and an ImageNet ResNet
checkpoint loads into TSM unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from extract.backbones.frame2d import IMAGENET_WEIGHTS, SMALL_INPUT_SIZE, TINY_INPUT_SIZE, FrameResNet, resnet_trunk
from extract.backbones.pretrained import from_torchvision, register_all
from extract.backbones.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneInfo, register_backbone
from extract.backbones.variants import register_variants

__all__ = ["VARIANTS", "ShiftConv2d", "TSMResNet", "temporal_shift"]

#: Frames per clip of the TSM paper's Kinetics models.
CLIP_LEN = 8


def temporal_shift(x: Tensor, n_segment: int, shift_div: int = 8) -> Tensor:
    """Shift 1/``shift_div`` of the channels back in time and 1/``shift_div`` forward.

    Args:
        x: ``(N*T, C, H, W)`` features of N clips of T = ``n_segment`` frames, frames of a
            clip consecutive.
        n_segment: T.
        shift_div: 1/fraction of channels shifted each way.

    Returns:
        Same shape: ``out[t, :fold] = x[t+1, :fold]``, ``out[t, fold:2fold] = x[t-1, fold:2fold]``
        (zeros past either end), other channels unchanged.
    """
    nt, c, h, w = x.shape
    if nt % n_segment:
        raise ValueError(f"temporal_shift: {nt} frames are not a multiple of n_segment={n_segment}")
    clips = x.reshape(nt // n_segment, n_segment, c, h, w)  # (N*T, C, H, W) -> (N, T, C, H, W)
    fold = c // shift_div
    out = clips.new_zeros(clips.shape)
    out[:, :-1, :fold] = clips[:, 1:, :fold]  # frame t <- frame t+1
    out[:, 1:, fold : 2 * fold] = clips[:, :-1, fold : 2 * fold]  # frame t <- frame t-1
    out[:, :, 2 * fold :] = clips[:, :, 2 * fold :]
    return out.view(nt, c, h, w)  # (N, T, C, H, W) -> (N*T, C, H, W)


class ShiftConv2d(nn.Conv2d):
    """A ``Conv2d`` that applies :func:`temporal_shift` to its input first.

    ``n_segment`` (frames per clip) is set by :class:`TSMResNet` before each forward.
    """

    n_segment: int = 1
    shift_div: int = 8

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, shift_div: int) -> ShiftConv2d:
        """A shifting copy of ``conv`` (same hyper-parameters, same parameter tensors)."""
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )
        new.weight = conv.weight
        new.bias = conv.bias
        new.shift_div = shift_div
        return new

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(temporal_shift(x, self.n_segment, self.shift_div))


class TSMResNet(FrameResNet):
    """A ResNet whose residual blocks shift channels over the T frames of a clip."""

    def __init__(
        self,
        info: BackboneInfo,
        trunk: Mapping[str, nn.Module],
        *,
        num_classes: int | None = None,
        dropout: float = 0.5,
        shift_div: int = 8,
    ) -> None:
        """Args as :class:`~extract.backbones.registry.Backbone`, plus ``shift_div`` (>= 2)."""
        if shift_div < 2:
            raise ValueError(
                f"shift_div must be >= 2 (2/shift_div of channels move), got {shift_div}"
            )
        super().__init__(info, trunk, num_classes=num_classes, dropout=dropout)
        self.shift_div = shift_div
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                block.conv1 = ShiftConv2d.from_conv(block.conv1, shift_div)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: shifted 2D net over the T frames, mean over T."""
        self.check_input(x)
        for module in self.modules():
            if isinstance(module, ShiftConv2d):
                module.n_segment = x.shape[2]
        return super().forward_features(x)


def _tsm_resnet(
    name: str,
    arch: str,
    input_size: int,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = CLIP_LEN,
    shift_div: int = 8,
) -> TSMResNet:
    """A TSM over a torchvision ResNet trunk (``arch``, or the tiny one): 1/``shift_div`` channels shift each way."""
    trunk, feature_dim = resnet_trunk(arch)
    info = BackboneInfo(
        name=name,
        kind="clip3d",
        feature_dim=feature_dim,
        clip_len=clip_len,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ).with_input_channels(in_channels, modality)
    return TSMResNet(info, trunk, num_classes=num_classes, dropout=dropout, shift_div=shift_div)


VARIANTS: dict[str, dict] = {
    "tsm_resnet18": {"doc": "TSM ResNet-18: D=512, 8-frame clips at 224 px, ImageNet normalisation.",
                     "arch": "resnet18", "input_size": 224},
    "tsm_resnet50": {"doc": "TSM ResNet-50 (the paper's model): D=2048, 8-frame clips at 224 px.",
                     "arch": "resnet50", "input_size": 224},
    "tsm_tiny": {"doc": "Test / CPU-smoke variant: TSM over the tiny ResNet (widths 8..64), D=64, 4x32x32 clips.",
                 "arch": "tiny", "input_size": TINY_INPUT_SIZE, "defaults": {"clip_len": 4}},
    "tsm_small": {"doc": "CPU variant for small frames (the demo): TSM over the small ResNet (widths 16..32, "
                         "3x3 stride-1 stem, 14x14 last map at 56 px, global max pooling), D=32, 4x56x56 clips.",
                  "arch": "small", "input_size": SMALL_INPUT_SIZE, "defaults": {"clip_len": 4}},
}
register_variants(register_backbone, _tsm_resnet, VARIANTS)
# ImageNet ResNet bodies (plain ResNet keys load unchanged); not a default: TSM is meant to be
# trained on video first (extract.train), so a bare tsm_resnet50 asks which weights to use.
for _name, _arch in (("tsm_resnet18", "resnet18"), ("tsm_resnet50", "resnet50")):
    _enum, _dim = IMAGENET_WEIGHTS[_arch]
    register_all(from_torchvision(_name, _enum, feature_dim=_dim, default=False, clip_len=CLIP_LEN))
