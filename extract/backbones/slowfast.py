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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from extract.backbones._narrow import _init_like_torchvision
from extract.backbones.i3d_nonlocal import (
    EXPANSION,
    PYSLOWFAST_MEAN,
    PYSLOWFAST_STD,
    make_layer3d,
)
from extract.backbones.registry import Backbone, BackboneInfo, register_backbone
from extract.backbones.weights import adapt_first_conv

__all__ = ["FastToSlow", "SlowFast", "slowfast_r50", "slowfast_r101", "slowfast_tiny"]

#: Blocks per stage for each depth.
DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
R50_WIDTHS = (64, 128, 256, 512)
TINY_WIDTHS = (8, 16, 32, 64)
#: Temporal kernel of the blocks' first conv, per stage (paper's Table 1).
SLOW_TEMPORAL = (1, 1, 3, 3)
FAST_TEMPORAL = (3, 3, 3, 3)
FUSION_KERNEL = 5
FUSION_RATIO = 2


class FastToSlow(nn.Module):
    """Lateral connection: time-strided conv of the Fast features, concatenated to the Slow ones."""

    def __init__(self, fast_channels: int, alpha: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            fast_channels,
            FUSION_RATIO * fast_channels,
            (FUSION_KERNEL, 1, 1),
            stride=(alpha, 1, 1),
            padding=(FUSION_KERNEL // 2, 0, 0),
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
    layers: Sequence[int], widths: Sequence[int], alpha: int, beta_inv: int
) -> tuple[dict[str, nn.Module], int]:
    """The modules of a randomly initialised SlowFast and its feature dim.

    Args:
        layers: blocks per stage (res2..res5).
        widths: inner widths of the Slow pathway's stages; the stem has ``widths[0]``
            channels. The Fast pathway has ``widths / beta_inv``.
        alpha: frame-rate ratio (the Slow pathway takes every alpha-th frame).
        beta_inv: channel ratio 1 / beta.
    """
    if alpha < 1 or beta_inv < 1:
        raise ValueError(f"alpha and beta_inv must be positive integers, got {alpha}, {beta_inv}")
    if any(w % beta_inv for w in widths):
        raise ValueError(
            f"the widths {tuple(widths)} must be multiples of beta_inv={beta_inv} "
            "(the Fast pathway has widths / beta_inv channels)"
        )
    fast_widths = [w // beta_inv for w in widths]
    trunk: dict[str, nn.Module] = {
        "slow_stem": _stem(widths[0], 1),
        "fast_stem": _stem(fast_widths[0], 5),
        "fuse0": FastToSlow(fast_widths[0], alpha),
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
        slow_in, fast_in = widths[i] * EXPANSION, fast_widths[i] * EXPANSION
        if i < 3:
            trunk[f"fuse{i + 1}"] = FastToSlow(fast_in, alpha)
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
    ) -> None:
        """Args as :class:`~extract.backbones.registry.Backbone`, plus the frame-rate ratio ``alpha``."""
        super().__init__(info, trunk, num_classes=num_classes, dropout=dropout)
        self.alpha = alpha
        if info.in_channels != 3:  # the base class adapted the Slow stem only
            adapt_first_conv(self.fast_stem, info.in_channels)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: both pathways, fused, pooled and concatenated."""
        self.check_input(x)
        slow = x[:, :, :: self.alpha]  # (B, C, T, H, W) -> (B, C, ceil(T/alpha), H, W)
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
    *,
    in_channels: int,
    num_classes: int | None,
    dropout: float,
    modality: str | None,
    clip_len: int,
    alpha: int,
    beta_inv: int,
) -> SlowFast:
    trunk, feature_dim = slowfast_trunk(layers, widths, alpha, beta_inv)
    info = BackboneInfo(
        name=name,
        kind="clip3d",
        feature_dim=feature_dim,
        clip_len=clip_len,
        input_size=input_size,
        mean=PYSLOWFAST_MEAN,
        std=PYSLOWFAST_STD,
    ).with_input_channels(in_channels, modality)
    return SlowFast(info, trunk, alpha=alpha, num_classes=num_classes, dropout=dropout)


@register_backbone("slowfast_r50")
def slowfast_r50(
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = 32,
    alpha: int = 8,
    beta_inv: int = 8,
) -> SlowFast:
    """SlowFast R50 4x16: 32x224x224 clips, Slow on 4 frames (alpha 8), beta 1/8, D=2304."""
    return _slowfast(
        "slowfast_r50",
        DEPTHS[50],
        R50_WIDTHS,
        224,
        in_channels=in_channels,
        num_classes=num_classes,
        dropout=dropout,
        modality=modality,
        clip_len=clip_len,
        alpha=alpha,
        beta_inv=beta_inv,
    )


@register_backbone("slowfast_r101")
def slowfast_r101(
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = 32,
    alpha: int = 8,
    beta_inv: int = 8,
) -> SlowFast:
    """SlowFast R101 (blocks 3, 4, 23, 3): 32x224x224 clips, alpha 8, beta 1/8, D=2304."""
    return _slowfast(
        "slowfast_r101",
        DEPTHS[101],
        R50_WIDTHS,
        224,
        in_channels=in_channels,
        num_classes=num_classes,
        dropout=dropout,
        modality=modality,
        clip_len=clip_len,
        alpha=alpha,
        beta_inv=beta_inv,
    )


@register_backbone("slowfast_tiny")
def slowfast_tiny(
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = 8,
    alpha: int = 4,
    beta_inv: int = 4,
) -> SlowFast:
    """Test / CPU-smoke variant: 1 block per stage, Slow widths 8..64, alpha 4, beta 1/4, 8x32x32."""
    return _slowfast(
        "slowfast_tiny",
        (1, 1, 1, 1),
        TINY_WIDTHS,
        32,
        in_channels=in_channels,
        num_classes=num_classes,
        dropout=dropout,
        modality=modality,
        clip_len=clip_len,
        alpha=alpha,
        beta_inv=beta_inv,
    )
