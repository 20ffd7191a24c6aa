"""TIN: Temporal Interlacing Network (Shao, Qian and Liu, AAAI 2020; SenseTime).

TSM (:mod:`extract.backbones.tsm`) moves fixed channel folds one frame back and forth.
TIN learns how far: before the first conv of every residual block (where TSM shifts), the
first ``C // shift_div`` channels are split into ``2 * groups`` equal channel groups and
group g is moved by a learned, fractional number of frames::

    x (N*T, C, H, W) -> first C/shift_div channels, mean over (H, W) -> (N, C', T)
      offset net: conv1d(C' -> 1, k=3) -> fc(T -> T) -> ReLU -> fc(T -> G) -> 2 * (2 sigmoid - 1)
                  -> offsets o (N, G) in (-2, 2) frames; groups G..2G-1 take -o (interlacing)
      weight net: conv1d(C' -> G, k=3) -> 2 sigmoid -> weights (N, G, T) in (0, 2)
      out[t, group g] = w_g(t) * ((1 - f) x[t - k] + f x[t - k - 1]),  k = floor(o_g), f = o_g - k

(zeros past either end of the clip), the other channels unchanged, then the block's conv.
A fractional offset is the linear interpolation of the two neighbouring integer shifts,
so the offsets get gradients. The offset net's last bias starts the offsets at 0.5 and the
weight net's bias starts the weights at 1, as in the authors' code (mmaction2's
``TemporalInterlace``). Offset sign: ``+1`` moves content one frame later (frame t sees
frame t-1), i.e. TSM's second fold; TSM's first fold is ``-1``.

The offset net has a T x T layer, so a TIN model is built for ``clip_len`` frames. The
interlacing conv is a ``Conv2d`` subclass holding the small nets: the state_dict is a
ResNet's plus ``layerX.Y.conv1.interlace.*``, so an ImageNet ResNet loads into it with only
the interlace keys missing: ``tin_resnet50@imagenet1k`` (torchvision's file; the interlace nets
keep their init).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from extract.backbones.frame2d import IMAGENET_WEIGHTS, TINY_INPUT_SIZE, FrameResNet, resnet_trunk
from extract.backbones.pretrained import from_torchvision, register_all
from extract.backbones.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneInfo, register_backbone
from extract.backbones.variants import register_variants

__all__ = ["VARIANTS", "InterlaceConv2d", "TINResNet", "TemporalInterlace", "interlace_shift"]

#: Offsets lie in (-MAX_OFFSET, MAX_OFFSET) frames (mmaction2: 4 * (sigmoid - 0.5)).
MAX_OFFSET = 2.0
INITIAL_OFFSET = 0.5


def interlace_shift(x: Tensor, offsets: Tensor, n_segment: int) -> Tensor:
    """Move equal channel groups by fractional numbers of frames, zero padded.

    Args:
        x: ``(N*T, C, H, W)`` features of N clips of T = ``n_segment`` frames, frames of a
            clip consecutive; C splits into G = ``offsets.shape[1]`` equal groups.
        offsets: ``(N, G)`` shifts in frames, one per clip and group.
        n_segment: T.

    Returns:
        Same shape: ``out[n, t, g] = (1 - f) x[n, t - k, g] + f x[n, t - k - 1, g]`` with
        ``k = floor(offsets[n, g])``, ``f = offsets[n, g] - k`` and zeros for frames outside
        ``[0, T)``. Differentiable in ``x`` and in ``offsets`` (through ``f``).
    """
    nt, c, h, w = x.shape
    n, g = offsets.shape
    if nt != n * n_segment:
        raise ValueError(
            f"interlace_shift: {nt} frames are not {n} clips of n_segment={n_segment} frames"
        )
    if c % g:
        raise ValueError(f"interlace_shift: {c} channels do not split into {g} equal groups")
    t = n_segment
    k = offsets.detach().floor()  # (N, G)
    f = (offsets - k)[..., None, None]  # (N, G) -> (N, G, 1, 1)
    frames = torch.arange(t, dtype=x.dtype, device=x.device)
    source = frames.view(1, 1, t, 1) - k.to(x.dtype).view(n, g, 1, 1)  # (N, G, T_out, 1)
    s = frames.view(1, 1, 1, t)
    mix = (s == source).to(x.dtype) * (1 - f) + (s == source - 1).to(x.dtype) * f  # (N, G, T, T)
    clips = x.reshape(n, t, g, c // g, h, w)  # (N*T, C, H, W) -> (N, T, G, C/G, H, W)
    out = torch.einsum("ngts,nsgchw->ntgchw", mix, clips)  # -> (N, T, G, C/G, H, W)
    return out.reshape(nt, c, h, w)  # (N, T, G, C/G, H, W) -> (N*T, C, H, W)


class _OffsetNet(nn.Module):
    """Pooled descriptor ``(N, C', T)`` -> offsets ``(N, G)`` in (-MAX_OFFSET, MAX_OFFSET)."""

    def __init__(self, channels: int, groups: int, n_segment: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, 1, 3, padding=1)
        self.fc1 = nn.Linear(n_segment, n_segment)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(n_segment, groups)
        p = (1 + INITIAL_OFFSET / MAX_OFFSET) / 2  # sigmoid value giving INITIAL_OFFSET
        nn.init.constant_(self.fc2.bias, math.log(p / (1 - p)))

    def forward(self, pooled: Tensor) -> Tensor:
        z = self.conv(pooled).flatten(1)  # (N, C', T) -> (N, T)
        z = self.fc2(self.relu(self.fc1(z)))  # (N, T) -> (N, G)
        return MAX_OFFSET * (2 * torch.sigmoid(z) - 1)


class _WeightNet(nn.Module):
    """Pooled descriptor ``(N, C', T)`` -> per-frame weights ``(N, G, T)`` in (0, 2)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, groups, 3, padding=1)
        nn.init.zeros_(self.conv.bias)

    def forward(self, pooled: Tensor) -> Tensor:
        return 2 * torch.sigmoid(self.conv(pooled))  # (N, C', T) -> (N, G, T)


class TemporalInterlace(nn.Module):
    """Learned fractional temporal shifts of ``channels // shift_div`` channels (see module doc)."""

    def __init__(self, channels: int, n_segment: int, shift_div: int = 4, groups: int = 2) -> None:
        """Args:
        channels: C of the input.
        n_segment: T, frames per clip (the offset net has a T x T layer).
        shift_div: the first ``C // shift_div`` channels are interlaced.
        groups: G learned offsets; 2G channel groups with offsets (o, -o).
        """
        super().__init__()
        if n_segment < 1 or shift_div < 1 or groups < 1:
            raise ValueError(
                f"n_segment, shift_div and groups must be positive, got {n_segment}, "
                f"{shift_div}, {groups}"
            )
        self.fold = channels // shift_div
        if self.fold < 2 * groups or self.fold % (2 * groups):
            raise ValueError(
                f"TIN on {channels} channels with shift_div={shift_div} interlaces {self.fold} "
                f"channels, which do not split into 2*groups={2 * groups} equal groups; lower "
                "shift_div or groups"
            )
        self.n_segment, self.groups = n_segment, groups
        self.offset_net = _OffsetNet(self.fold, groups, n_segment)
        self.weight_net = _WeightNet(self.fold, groups)

    def forward(self, x: Tensor) -> Tensor:
        nt, _, h, w = x.shape
        t, fold = self.n_segment, self.fold
        if nt % t:
            raise ValueError(f"TIN: {nt} frames are not a multiple of n_segment={t}")
        n = nt // t
        part = x[:, :fold]
        pooled = part.mean(dim=(2, 3)).view(n, t, fold).transpose(1, 2)  # -> (N, C', T)
        offsets = self.offset_net(pooled)  # (N, G)
        weights = self.weight_net(pooled)  # (N, G, T)
        offsets = torch.cat([offsets, -offsets], dim=1)  # (N, G) -> (N, 2G)
        weights = torch.cat([weights, weights], dim=1).transpose(1, 2)  # -> (N, T, 2G)
        shifted = interlace_shift(part, offsets, t)  # (N*T, C', H, W)
        shifted = shifted.view(n, t, 2 * self.groups, -1, h, w) * weights[..., None, None, None]
        return torch.cat([shifted.view(nt, fold, h, w), x[:, fold:]], dim=1)  # -> (N*T, C, H, W)


class InterlaceConv2d(nn.Conv2d):
    """A ``Conv2d`` that applies a :class:`TemporalInterlace` to its input first (TSM's place)."""

    @classmethod
    def from_conv(
        cls, conv: nn.Conv2d, n_segment: int, shift_div: int, groups: int
    ) -> InterlaceConv2d:
        """An interlacing copy of ``conv`` (same hyper-parameters, same parameter tensors)."""
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
        new.interlace = TemporalInterlace(conv.in_channels, n_segment, shift_div, groups)
        return new

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.interlace(x))


class TINResNet(FrameResNet):
    """A ResNet whose residual blocks interlace channels over the T frames of a clip."""

    def __init__(
        self,
        info: BackboneInfo,
        trunk: Mapping[str, nn.Module],
        *,
        num_classes: int | None = None,
        dropout: float = 0.5,
        shift_div: int = 4,
        groups: int = 2,
    ) -> None:
        """Args as :class:`~extract.backbones.registry.Backbone`, plus ``shift_div`` and ``groups``."""
        super().__init__(info, trunk, num_classes=num_classes, dropout=dropout)
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                block.conv1 = InterlaceConv2d.from_conv(
                    block.conv1, info.clip_len, shift_div, groups
                )

    def check_input(self, x: Tensor) -> None:
        """As the base class, and T must be ``info.clip_len`` (the offset nets' size)."""
        super().check_input(x)
        if x.shape[2] != self.info.clip_len:
            raise ValueError(
                f"{self.info.name} was built for clips of clip_len={self.info.clip_len} frames "
                f"(its offset networks have a T x T layer), got {x.shape[2]}; build it with "
                f"get_backbone({self.info.name!r}, clip_len={x.shape[2]})"
            )


def _tin_resnet(
    name: str,
    arch: str,
    input_size: int,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = 8,
    shift_div: int = 4,
    groups: int = 2,
) -> TINResNet:
    """A TIN over a torchvision ResNet trunk (``arch``, or the tiny one)."""
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
    return TINResNet(
        info, trunk, num_classes=num_classes, dropout=dropout, shift_div=shift_div, groups=groups
    )


VARIANTS: dict[str, dict] = {
    "tin_resnet50": {"doc": "TIN ResNet-50 (the paper's model): D=2048, 8-frame clips at 224 px, 1/4 of channels "
                            "interlaced.", "arch": "resnet50", "input_size": 224},
    # shift_div=2 so that the tiny 8-channel blocks still interlace 2*groups whole channels
    "tin_tiny": {"doc": "Test / CPU-smoke variant: TIN over the tiny ResNet (widths 8..64), D=64, 8x32x32 clips.",
                 "arch": "tiny", "input_size": TINY_INPUT_SIZE, "defaults": {"shift_div": 2}},
}
register_variants(register_backbone, _tin_resnet, VARIANTS)
# The ImageNet ResNet-50 body, the interlace (offset and weight) nets keeping their own init, as
# TIN trains from; not a default (a TIN is meant to be trained on video first, with extract.train).
register_all(from_torchvision("tin_resnet50", IMAGENET_WEIGHTS["resnet50"][0], feature_dim=2048, default=False,
                              clip_len=8, keep_init=(".interlace.",)))
