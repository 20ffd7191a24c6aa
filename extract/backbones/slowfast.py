"""SlowFast networks (Feichtenhofer, Fan, Malik and He, ICCV 2019).

Two 3D ResNets on one clip: a Slow pathway on every ``alpha``-th frame with the full
widths, and a Fast pathway on all T frames with ``beta = 1 / beta_inv`` of the channels.
After the stem and after res2, res3 and res4 a lateral connection (a 5x1x1 conv with
time stride ``alpha`` and ``2 * beta * C`` outputs, then BN + ReLU) carries the Fast
features into the Slow pathway, where they are concatenated::

    x (B, 3, T, H, W) --every alpha-th frame--> slow (B, 3, T/alpha, H, W)
                      --------all frames------> fast (B, 3, T, H, W)
    slow_stem | fast_stem -> fuse0 -> slow_layer1 | fast_layer1 -> fuse1 -> ...
      -> slow_layer4 | fast_layer4 -> mean over (t, h, w) of each -> concat (B, D_slow + D_fast)

Temporal kernels as in the paper's Table 1: Slow stem 1x7x7, first conv of the blocks 1
in res2/res3 and 3 in res4/res5; Fast stem 5x7x7 and 3 in every block. No temporal
striding, so the Slow pathway keeps T/alpha frames throughout. ``slowfast_r50`` is the
4x16 model: 32-frame clips (the Slow pathway sees 4 of them), 224 px, D = 2048 + 256.

Temporal shift (``shift_div > 0``; TSM, Lin, Gan and Han 2019, on both pathways): before
the first conv of every residual block, channels ``[0, fold)`` of frame t take frame t+1's
values and channels ``[fold, 2 fold)`` frame t-1's (zeros past the ends of the clip),
``fold = C_in // shift_div``, as :func:`extract.backbones.tsm.temporal_shift` does for 2D
nets. The shortcut keeps the unshifted input (TSM's residual shift)::

    block(x) = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(shift(x))))))))) + shortcut(x))

The shifting conv is a :class:`TemporalPadConv3d` subclass, so the state_dict and the
parameter count are those of the unshifted model (a SlowFast checkpoint loads as is). A
block whose input has fewer than ``shift_div`` channels (``fold = 0``) is left unshifted.
The shift is recorded in the name: ``slowfast_shift_r50`` / ``slowfast_shift_tiny`` are
registered with ``shift_div = 8``; another ``shift_div`` gives ``slowfast_shift4_r50``...

``slowfast_8x8_r50`` is the architecture of the public SLOWFAST_8x8_R50 checkpoints
(PySlowFast, pytorchvideo; see ``extract/backbones/converters/``): alpha 4 (the Slow
pathway sees 8 of the 32 frames), 7x1x1 lateral convs, and the Slow frames picked as
PySlowFast packs them, ``linspace(0, T - 1, T // alpha)`` rounded down (0, 4, 8, 13, 17,
22, 26, 31 for 32 frames) instead of every alpha-th frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from extract.backbones._narrow import _init_like_torchvision
from extract.backbones.i3d_nonlocal import (
    EXPANSION,
    PYSLOWFAST_MEAN,
    PYSLOWFAST_STD,
    TemporalPadConv3d,
    make_layer3d,
)
from extract.backbones.registry import Backbone, BackboneInfo, register_backbone
from extract.backbones.variants import register_variants
from extract.backbones.weights import adapt_first_conv

__all__ = [
    "FastToSlow",
    "ShiftConv3d",
    "SlowFast",
    "shifted_name",
    "VARIANTS",
    "temporal_shift_5d",
]

#: Blocks per stage for each depth.
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
R50_WIDTHS = (64, 128, 256, 512)
TINY_WIDTHS = (8, 16, 32, 64)
#: Temporal kernel of the blocks' first conv, per stage (paper's Table 1).
SLOW_TEMPORAL = (1, 1, 3, 3)
FAST_TEMPORAL = (3, 3, 3, 3)
FUSION_KERNEL = 5
FUSION_RATIO = 2
SlowFrames = Literal["stride", "linspace"]
#: shift_div of the registered ``slowfast_shift_*`` variants (TSM's 1/8 each way).
SHIFT_DIV = 8


def temporal_shift_5d(x: Tensor, shift_div: int = SHIFT_DIV) -> Tensor:
    """:func:`~extract.backbones.tsm.temporal_shift` for ``(N, C, T, H, W)`` clips.

    Args:
        x: ``(N, C, T, H, W)`` features.
        shift_div: 1/fraction of channels shifted each way; ``fold = C // shift_div``.

    Returns:
        Same shape: ``out[:, :fold, t] = x[:, :fold, t+1]``,
        ``out[:, fold:2fold, t] = x[:, fold:2fold, t-1]`` (zeros past either end), other
        channels unchanged.
    """
    if x.ndim != 5:
        raise ValueError(f"temporal_shift_5d expects (N, C, T, H, W), got shape {tuple(x.shape)}")
    fold = x.shape[1] // shift_div
    out = torch.zeros_like(x)
    out[:, :fold, :-1] = x[:, :fold, 1:]  # frame t <- frame t+1
    out[:, fold : 2 * fold, 1:] = x[:, fold : 2 * fold, :-1]  # frame t <- frame t-1
    out[:, 2 * fold :] = x[:, 2 * fold :]
    return out


class ShiftConv3d(TemporalPadConv3d):
    """A :class:`TemporalPadConv3d` that applies :func:`temporal_shift_5d` to its input first."""

    shift_div: int = SHIFT_DIV

    @classmethod
    def from_conv(cls, conv: TemporalPadConv3d, shift_div: int) -> ShiftConv3d:
        """A shifting copy of ``conv`` (same hyper-parameters, same parameter tensors).

        Building the copy draws no random numbers, so a shifted net has the same initial
        weights as the unshifted one under the same seed.
        """
        with torch.random.fork_rng(devices=[]):
            new = cls(
                conv.in_channels,
                conv.out_channels,
                conv.kernel_size,
                stride=conv.stride,
                temporal_padding="replicate" if conv.time_pad else "zeros",
            )
        new.weight = conv.weight
        new.shift_div = shift_div
        return new

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(temporal_shift_5d(x, self.shift_div))


def shifted_name(name: str, shift_div: int) -> str:
    """The variant name recording ``shift_div``: ``slowfast_r50`` -> ``slowfast_shift_r50`` (8),
    ``slowfast_shift4_r50`` (4); ``name`` itself for 0."""
    if shift_div == 0:
        return name
    tag = "shift" if shift_div == SHIFT_DIV else f"shift{shift_div}"
    return name.replace("slowfast_", f"slowfast_{tag}_", 1)


class FastToSlow(nn.Module):
    """Lateral connection: time-strided conv of the Fast features, concatenated to the Slow ones."""

    def __init__(self, fast_channels: int, alpha: int, kernel: int = FUSION_KERNEL) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            fast_channels,
            FUSION_RATIO * fast_channels,
            (kernel, 1, 1),
            stride=(alpha, 1, 1),
            padding=(kernel // 2, 0, 0),
            bias=False,
        )
        self.bn = nn.BatchNorm3d(FUSION_RATIO * fast_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, slow: Tensor, fast: Tensor) -> Tensor:
        """``(B, Cs, T/a, h, w)``, ``(B, Cf, T, h, w)`` -> ``(B, Cs + 2 Cf, T/a, h, w)``."""
        lateral = self.relu(self.bn(self.conv(fast)))  # (B, Cf, T, h, w) -> (B, 2Cf, T/a, h, w)
        return torch.cat([slow, lateral], dim=1)  # -> (B, Cs + 2Cf, T/a, h, w)


def _stem(out_channels: int, temporal_kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(
            3,
            out_channels,
            (temporal_kernel, 7, 7),
            stride=(1, 2, 2),
            padding=(temporal_kernel // 2, 3, 3),
            bias=False,
        ),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    )


def slowfast_trunk(
    layers: Sequence[int],
    widths: Sequence[int],
    alpha: int,
    beta_inv: int,
    shift_div: int = 0,
    fusion_kernel: int = FUSION_KERNEL,
) -> tuple[dict[str, nn.Module], int]:
    """The modules of a randomly initialised SlowFast and its feature dim.

    Args:
        layers: blocks per stage (res2..res5).
        widths: inner widths of the Slow pathway's stages; the stem has ``widths[0]``
            channels. The Fast pathway has ``widths / beta_inv``.
        alpha: frame-rate ratio (the Slow pathway takes every alpha-th frame).
        beta_inv: channel ratio 1 / beta.
        shift_div: 0 for none, else every block of both pathways shifts 1/shift_div of
            its input channels each way in time before its first conv (module docstring).
        fusion_kernel: temporal kernel of the lateral connections' convs (odd).
    """
    if alpha < 1 or beta_inv < 1:
        raise ValueError(f"alpha and beta_inv must be positive integers, got {alpha}, {beta_inv}")
    if shift_div != 0 and shift_div < 2:
        raise ValueError(
            f"shift_div must be 0 (no temporal shift) or >= 2 (2/shift_div of the channels "
            f"move), got {shift_div}"
        )
    if fusion_kernel < 1 or fusion_kernel % 2 == 0:
        raise ValueError(f"fusion_kernel must be a positive odd number, got {fusion_kernel}")
    if any(w % beta_inv for w in widths):
        raise ValueError(
            f"the widths {tuple(widths)} must be multiples of beta_inv={beta_inv} "
            "(the Fast pathway has widths / beta_inv channels)"
        )
    fast_widths = [w // beta_inv for w in widths]
    trunk: dict[str, nn.Module] = {
        "slow_stem": _stem(widths[0], 1),
        "fast_stem": _stem(fast_widths[0], 5),
        "fuse0": FastToSlow(fast_widths[0], alpha, fusion_kernel),
    }
    slow_in = widths[0] + FUSION_RATIO * fast_widths[0]
    fast_in = fast_widths[0]
    for i, blocks in enumerate(layers):
        stride = 1 if i == 0 else 2
        trunk[f"slow_layer{i + 1}"] = make_layer3d(
            slow_in, widths[i], blocks, stride=stride, temporal_kernels=(SLOW_TEMPORAL[i],)
        )
        trunk[f"fast_layer{i + 1}"] = make_layer3d(
            fast_in, fast_widths[i], blocks, stride=stride, temporal_kernels=(FAST_TEMPORAL[i],)
        )
        if shift_div:
            for layer in (trunk[f"slow_layer{i + 1}"], trunk[f"fast_layer{i + 1}"]):
                for block in layer:
                    block.conv1 = ShiftConv3d.from_conv(block.conv1, shift_div)
        slow_in, fast_in = widths[i] * EXPANSION, fast_widths[i] * EXPANSION
        if i < 3:
            trunk[f"fuse{i + 1}"] = FastToSlow(fast_in, alpha, fusion_kernel)
            slow_in += FUSION_RATIO * fast_in
    for module in trunk.values():
        _init_like_torchvision(module)
    return trunk, slow_in + fast_in


class SlowFast(Backbone):
    """SlowFast: ``(B, C, T, H, W)`` clip -> ``(B, D_slow + D_fast)`` feature."""

    stage_names = (
        ("slow_stem", "fast_stem", "fuse0"),
        ("slow_layer1", "fast_layer1", "fuse1"),
        ("slow_layer2", "fast_layer2", "fuse2"),
        ("slow_layer3", "fast_layer3", "fuse3"),
        ("slow_layer4", "fast_layer4"),
    )

    def __init__(
        self,
        info: BackboneInfo,
        trunk: Mapping[str, nn.Module],
        *,
        alpha: int,
        num_classes: int | None = None,
        dropout: float = 0.5,
        slow_frames: SlowFrames = "stride",
    ) -> None:
        """Args as :class:`~extract.backbones.registry.Backbone`, plus the frame-rate ratio ``alpha``
        and how the Slow pathway picks its frames: ``"stride"`` (every alpha-th, from the
        first: ``ceil(T / alpha)`` frames) or ``"linspace"`` (PySlowFast / pytorchvideo:
        ``T // alpha`` frames at ``linspace(0, T - 1, T // alpha)`` rounded down, first and
        last included)."""
        if slow_frames not in ("stride", "linspace"):
            raise ValueError(f"slow_frames must be 'stride' or 'linspace', got {slow_frames!r}")
        super().__init__(info, trunk, num_classes=num_classes, dropout=dropout)
        self.alpha = alpha
        self.slow_frames = slow_frames
        if info.in_channels != 3:  # the base class adapted the Slow stem only
            adapt_first_conv(self.fast_stem, info.in_channels)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: both pathways, fused, pooled and concatenated."""
        self.check_input(x)
        if self.slow_frames == "stride":
            slow = x[:, :, :: self.alpha]  # (B, C, T, H, W) -> (B, C, ceil(T/alpha), H, W)
        else:
            t = x.shape[2]
            if t < self.alpha:
                raise ValueError(f"{self.info.name} needs at least alpha={self.alpha} frames, got {t}")
            index = torch.linspace(0, t - 1, t // self.alpha).long().to(x.device)
            slow = x.index_select(2, index)  # (B, C, T, H, W) -> (B, C, T//alpha, H, W)
        slow, fast = self.slow_stem(slow), self.fast_stem(x)
        slow = self.fuse0(slow, fast)
        for i in range(1, 5):
            slow = self.get_submodule(f"slow_layer{i}")(slow)
            fast = self.get_submodule(f"fast_layer{i}")(fast)
            if i < 4:
                slow = self.get_submodule(f"fuse{i}")(slow, fast)
        pooled = [slow.mean(dim=(2, 3, 4)), fast.mean(dim=(2, 3, 4))]  # (B, C, t, h, w) -> (B, C)
        return torch.cat(pooled, dim=1)  # -> (B, D_slow + D_fast)


def _slowfast(
    name: str,
    layers: Sequence[int],
    widths: Sequence[int],
    input_size: int,
    base: str | None = None,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = 32,
    alpha: int = 8,
    beta_inv: int = 8,
    shift_div: int = 0,
    fusion_kernel: int = FUSION_KERNEL,
    slow_frames: SlowFrames = "stride",
) -> SlowFast:
    """A SlowFast of ``layers`` blocks and Slow ``widths``; ``info.name`` records the shift
    (:func:`shifted_name` of ``base``, the unshifted variant, or of ``name``)."""
    trunk, feature_dim = slowfast_trunk(layers, widths, alpha, beta_inv, shift_div, fusion_kernel)
    info = BackboneInfo(
        name=shifted_name(base or name, shift_div),
        kind="clip3d",
        feature_dim=feature_dim,
        clip_len=clip_len,
        input_size=input_size,
        mean=PYSLOWFAST_MEAN,
        std=PYSLOWFAST_STD,
    ).with_input_channels(in_channels, modality)
    return SlowFast(info, trunk, alpha=alpha, num_classes=num_classes, dropout=dropout, slow_frames=slow_frames)


_R50 = {"layers": DEPTHS[50], "widths": R50_WIDTHS, "input_size": 224, "base": None}
_TINY = {"layers": (1, 1, 1, 1), "widths": TINY_WIDTHS, "input_size": 32, "base": None,
         "defaults": {"clip_len": 8, "alpha": 4, "beta_inv": 4}}
VARIANTS: dict[str, dict] = {
    "slowfast_r50": {"doc": "SlowFast R50 4x16: 32x224x224 clips, Slow on 4 frames (alpha 8), beta 1/8, D=2304.",
                     **_R50},
    "slowfast_r101": {"doc": "SlowFast R101 (blocks 3, 4, 23, 3): 32x224x224 clips, alpha 8, beta 1/8, D=2304.",
                      **_R50, "layers": DEPTHS[101]},
    "slowfast_8x8_r50": {"doc": "SlowFast R50 8x8 as PySlowFast / pytorchvideo's SLOWFAST_8x8_R50 (Kinetics-400 "
                                "checkpoints): 32x224x224 clips, Slow on 8 of them (alpha 4, linspace), beta 1/8, "
                                "7x1x1 lateral convs, D=2304.",
                         **_R50, "fusion_kernel": 7, "slow_frames": "linspace", "defaults": {"alpha": 4}},
    "slowfast_tiny": {"doc": "Test / CPU-smoke variant: 1 block per stage, Slow widths 8..64, alpha 4, beta 1/4, "
                             "8x32x32.", **_TINY},
    "slowfast_shift_r50": {"doc": "SlowFast R50 4x16 with TSM shifts in every block of both pathways (1/8 each way).",
                           **_R50, "base": "slowfast_r50", "defaults": {"shift_div": SHIFT_DIV}},
    # the Fast pathway's first block sees 2 channels (fold 0) and stays unshifted
    "slowfast_shift_tiny": {"doc": "Test / CPU-smoke variant of ``slowfast_shift_r50``: ``slowfast_tiny`` with shifts "
                                   "(1/8).", **_TINY, "base": "slowfast_tiny",
                            "defaults": {**_TINY["defaults"], "shift_div": SHIFT_DIV}},
}
register_variants(register_backbone, _slowfast, VARIANTS)
