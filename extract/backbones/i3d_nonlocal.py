"""I3D ResNet-50 with non-local blocks (Wang, Girshick, Gupta and He, CVPR 2018).

The inflated ResNet-50 of the non-local paper ("I3D 3x1x1"), laid out as PySlowFast's
I3D-NLN 8x8 R50, its public re-implementation::

    x (B, 3, T, H, W) -> conv1 5x7x7 /(1,2,2) -> maxpool 1x3x3 /(1,2,2)
      -> layer1 (res2) -> pool2 2x1x1 /(2,1,1) -> layer2 (res3) -> layer3 (res4) -> layer4 (res5)
      -> global average pool -> (B, 2048)

Blocks are torchvision's bottleneck (1x1, 3x3 carrying the stride, 1x1, expansion 4) with
the first 1x1 inflated to 3x1x1 in every other block: temporal kernels 3,3,3 (res2),
3,1,3,1 (res3), 3,1,3,1,3,1 (res4), 1,3,1 (res5). Non-local blocks follow blocks 1 and 3
of res3 and 1, 3, 5 of res4 (5 in all, ``nonlocal_at`` changes that).

Non-local block (embedded Gaussian)::

    theta, phi, g = 1x1x1 convs C -> d = C/2;  phi, g max-pooled 1x2x2 (the paper's subsampling)
    y = softmax(theta^T phi / sqrt(d)) g;  z = x + BN(W_z y), BN gamma initialised to 0

so every non-local block is the identity at initialisation.

Inflation: :func:`inflate_from_2d` turns a 2D ResNet state_dict (torchvision layout) into
this model: a kernel ``w`` of shape (O, I, h, w) becomes ``w / t`` repeated over the t
temporal taps. Temporal padding defaults to ``"replicate"``, so a temporally constant clip
gives exactly the 2D net's activations on one frame (the I3D "boring video" fixed point);
``temporal_padding="zeros"`` is the paper's padding, under which the fixed point holds
only away from the first and last frames. The default clip is 8 frames (the 8x8 recipe:
8 frames taken every 8th frame, which is the sampler's business) at 224 px.

Public checkpoints (``extract/backbones/converters/``) need the exact architectures they
were trained with: ``i3d_8x8_r50`` (PySlowFast / pytorchvideo I3D_8x8_R50: no non-local
block, zero temporal padding) and ``i3d_nln_8x8_r50`` (PySlowFast I3D_NLN_8x8_R50: zero
temporal padding, and non-local blocks that max-pool their input ``x`` before the phi and
g convs, where ``i3d_nl_r50`` pools the conv outputs). Their pool after res2 rounds odd
frame counts up where PySlowFast rounds down: equal for the even clips they are made for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from extract.backbones._narrow import _init_like_torchvision
from extract.backbones.registry import Backbone, BackboneInfo, register_backbone
from extract.backbones.variants import register_variants
from extract.backbones.weights import WeightsError, _average_kernel, _read_state_dict

logger = logging.getLogger(__name__)

__all__ = [
    "PYSLOWFAST_MEAN",
    "PYSLOWFAST_STD",
    "Bottleneck3d",
    "I3DResNet",
    "NonLocalBlock",
    "TemporalPadConv3d",
    "VARIANTS",
    "inflate_from_2d",
]

#: Normalisation of PySlowFast's Kinetics models (SlowFast, I3D-NLN).
PYSLOWFAST_MEAN = (0.45, 0.45, 0.45)
PYSLOWFAST_STD = (0.225, 0.225, 0.225)
TemporalPadding = Literal["zeros", "replicate"]
#: Temporal kernel of each block's first conv, per stage, cycled over the blocks.
I3D_TEMPORAL_KERNELS = ((3,), (3, 1), (3, 1), (1, 3))
R50_LAYERS = (3, 4, 6, 3)
R50_WIDTHS = (64, 128, 256, 512)
R50_NONLOCAL_AT = ((), (1, 3), (1, 3, 5), ())
TINY_LAYERS = (1, 2, 2, 1)
TINY_WIDTHS = (8, 16, 32, 64)
TINY_NONLOCAL_AT = ((), (1,), (1,), ())
EXPANSION = 4


class TemporalPadConv3d(nn.Conv3d):
    """A bias-free ``Conv3d`` padded "same", with zeros or replicated frames in time.

    Space is always zero padded (as the 2D net it may be inflated from); time is zero
    padded (``"zeros"``) or padded with copies of the first and last frames
    (``"replicate"``). The state_dict is a plain ``Conv3d``'s.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int, int],
        stride: tuple[int, int, int] = (1, 1, 1),
        temporal_padding: TemporalPadding = "zeros",
    ) -> None:
        if temporal_padding not in ("zeros", "replicate"):
            raise ValueError(
                f"temporal_padding must be 'zeros' or 'replicate', got {temporal_padding!r}"
            )
        kt, kh, kw = kernel_size
        self.time_pad = kt // 2 if temporal_padding == "replicate" else 0
        padding = (0 if self.time_pad else kt // 2, kh // 2, kw // 2)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.time_pad:
            p = self.time_pad
            x = F.pad(
                x, (0, 0, 0, 0, p, p), mode="replicate"
            )  # (B, C, T, H, W) -> (B, C, T+2p, H, W)
        return super().forward(x)


class NonLocalBlock(nn.Module):
    """Embedded-Gaussian non-local block with a zero-initialised output BN (identity at init)."""

    def __init__(
        self,
        channels: int,
        *,
        subsample: tuple[int, int, int] = (1, 2, 2),
        zero_init: bool = True,
        pool_first: bool = False,
    ) -> None:
        """Args:
        channels: C, input and output channels; the inner dim is d = C // 2.
        subsample: max-pool kernel (= stride) applied to phi and g; (1, 1, 1) for none.
        zero_init: zero the output BN's gamma (the paper); False starts from BN's default 1.
        pool_first: max-pool the block's input ``x`` before the phi and g convs (floor
            division of odd sizes), as PySlowFast's and pytorchvideo's ``Nonlocal``;
            False (the default) pools the phi and g outputs (ceil division). A max does
            not commute with a 1x1 conv, so the two are different functions.
        """
        super().__init__()
        if channels < 2:
            raise ValueError(f"a non-local block needs at least 2 channels, got {channels}")
        self.inner = channels // 2
        self.pool_first = pool_first
        self.conv_theta = nn.Conv3d(channels, self.inner, 1)
        self.conv_phi = nn.Conv3d(channels, self.inner, 1)
        self.conv_g = nn.Conv3d(channels, self.inner, 1)
        self.pool = nn.MaxPool3d(subsample, subsample, ceil_mode=not pool_first)
        self.conv_out = nn.Conv3d(self.inner, channels, 1)  # W_z
        self.bn = nn.BatchNorm3d(channels)
        self.zero_init = zero_init
        self.reset_output()

    def reset_output(self) -> None:
        """Set the output BN as at construction (gamma 0 with ``zero_init``, else 1; beta 0)."""
        nn.init.constant_(self.bn.weight, 0.0 if self.zero_init else 1.0)
        nn.init.zeros_(self.bn.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t, h, w = x.shape
        theta = self.conv_theta(x).flatten(2)  # (B, C, T, H, W) -> (B, d, N)
        if self.pool_first:
            pooled = self.pool(x)  # (B, C, T, H, W) -> (B, C, T', H', W')
            phi = self.conv_phi(pooled).flatten(2)  # -> (B, d, M)
            g = self.conv_g(pooled).flatten(2)  # -> (B, d, M)
        else:
            phi = self.pool(self.conv_phi(x)).flatten(2)  # (B, C, T, H, W) -> (B, d, M)
            g = self.pool(self.conv_g(x)).flatten(2)  # (B, C, T, H, W) -> (B, d, M)
        affinity = torch.bmm(theta.transpose(1, 2), phi) * self.inner**-0.5  # (B, N, M)
        attention = affinity.softmax(dim=-1)
        y = torch.bmm(g, attention.transpose(1, 2))  # (B, d, M) x (B, M, N) -> (B, d, N)
        y = y.view(b, self.inner, t, h, w)  # (B, d, N) -> (B, d, T, H, W)
        return x + self.bn(self.conv_out(y))


class Bottleneck3d(nn.Module):
    """torchvision's ``Bottleneck`` in 3D: kt x 1 x 1, 1 x 3 x 3 (stride), 1 x 1 x 1, expansion 4.

    Module names are torchvision's (``conv1`` ... ``bn3``, ``downsample``), so the
    state_dict matches a 2D ResNet's up to the kernels' time axis. An optional non-local
    block (``nl``) runs on the block's output.
    """

    def __init__(
        self,
        inplanes: int,
        planes: int,
        *,
        stride: int = 1,
        temporal_kernel: int = 1,
        temporal_padding: TemporalPadding = "zeros",
        nonlocal_block: NonLocalBlock | None = None,
    ) -> None:
        super().__init__()
        out = planes * EXPANSION
        self.conv1 = TemporalPadConv3d(
            inplanes, planes, (temporal_kernel, 1, 1), temporal_padding=temporal_padding
        )
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(
            planes, planes, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
        )
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv3d(inplanes, out, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(out),
            )
        self.nl = nonlocal_block

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.relu(self.bn3(self.conv3(out)) + identity)
        return out if self.nl is None else self.nl(out)


def make_layer3d(
    inplanes: int,
    planes: int,
    blocks: int,
    *,
    stride: int,
    temporal_kernels: Sequence[int],
    temporal_padding: TemporalPadding = "zeros",
    nonlocal_at: Sequence[int] = (),
    nl_zero_init: bool = True,
    nl_pool_first: bool = False,
) -> nn.Sequential:
    """A stage of :class:`Bottleneck3d` blocks; ``temporal_kernels`` is cycled over the blocks.

    Args:
        inplanes: input channels of the stage.
        planes: inner width; the stage outputs ``planes * 4`` channels.
        blocks: number of blocks.
        stride: spatial stride of the first block.
        temporal_kernels: temporal kernel of each block's first conv, cycled.
        temporal_padding: see :class:`TemporalPadConv3d`.
        nonlocal_at: indices of the blocks followed by a :class:`NonLocalBlock`.
        nl_zero_init: zero-initialise the non-local blocks' output BN.
        nl_pool_first: the non-local blocks pool their input (see :class:`NonLocalBlock`).
    """
    bad = [i for i in nonlocal_at if not 0 <= i < blocks]
    if bad:
        raise ValueError(
            f"non-local positions {bad} are outside this stage's blocks 0..{blocks - 1}; "
            "give block indices within each stage"
        )
    layer = []
    for i in range(blocks):
        nl = (NonLocalBlock(planes * EXPANSION, zero_init=nl_zero_init, pool_first=nl_pool_first)
              if i in nonlocal_at else None)
        layer.append(
            Bottleneck3d(
                inplanes if i == 0 else planes * EXPANSION,
                planes,
                stride=stride if i == 0 else 1,
                temporal_kernel=temporal_kernels[i % len(temporal_kernels)],
                temporal_padding=temporal_padding,
                nonlocal_block=nl,
            )
        )
    return nn.Sequential(*layer)


class I3DResNet(Backbone):
    """Inflated ResNet with non-local blocks: ``(B, C, T, H, W)`` clip -> ``(B, D)`` feature."""

    stage_names = (
        ("conv1", "bn1", "relu", "maxpool"),
        ("layer1", "pool2"),
        ("layer2",),
        ("layer3",),
        ("layer4",),
    )

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: 3D trunk (time halved after res2), global mean."""
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.pool2(self.layer1(x))
        x = self.layer4(self.layer3(self.layer2(x)))
        return x.mean(dim=(2, 3, 4))  # (B, D, t, h, w) -> (B, D)


def i3d_trunk(
    layers: Sequence[int],
    widths: Sequence[int],
    nonlocal_at: Sequence[Sequence[int]],
    *,
    temporal_padding: TemporalPadding,
    nl_zero_init: bool,
    nl_pool_first: bool = False,
) -> tuple[dict[str, nn.Module], int]:
    """The modules of a randomly initialised I3D ResNet and its feature dim."""
    if len(layers) != 4 or len(widths) != 4 or len(nonlocal_at) != 4:
        raise ValueError(
            "layers, widths and nonlocal_at need one entry per stage (res2..res5), got "
            f"{len(layers)}, {len(widths)}, {len(nonlocal_at)}"
        )
    trunk: dict[str, nn.Module] = {
        "conv1": TemporalPadConv3d(
            3, widths[0], (5, 7, 7), stride=(1, 2, 2), temporal_padding=temporal_padding
        ),
        "bn1": nn.BatchNorm3d(widths[0]),
        "relu": nn.ReLU(inplace=True),
        "maxpool": nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    }
    inplanes = widths[0]
    for i, (blocks, planes) in enumerate(zip(layers, widths, strict=True)):
        trunk[f"layer{i + 1}"] = make_layer3d(
            inplanes,
            planes,
            blocks,
            stride=1 if i == 0 else 2,
            temporal_kernels=I3D_TEMPORAL_KERNELS[i],
            temporal_padding=temporal_padding,
            nonlocal_at=nonlocal_at[i],
            nl_zero_init=nl_zero_init,
            nl_pool_first=nl_pool_first,
        )
        inplanes = planes * EXPANSION
        if i == 0:
            trunk["pool2"] = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1), ceil_mode=True)
    for module in trunk.values():
        _init_like_torchvision(module)
        for m in module.modules():
            if isinstance(m, NonLocalBlock):
                m.reset_output()
    return trunk, inplanes


def _i3d(
    name: str,
    layers: Sequence[int],
    widths: Sequence[int],
    input_size: int,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int = 8,
    nonlocal_at: Sequence[Sequence[int]] = R50_NONLOCAL_AT,
    temporal_padding: TemporalPadding = "replicate",
    nl_zero_init: bool = True,
    nl_pool_first: bool = False,
) -> I3DResNet:
    """An I3D ResNet of ``layers`` blocks and ``widths`` per stage, non-local blocks at ``nonlocal_at``."""
    trunk, feature_dim = i3d_trunk(
        layers, widths, nonlocal_at, temporal_padding=temporal_padding, nl_zero_init=nl_zero_init,
        nl_pool_first=nl_pool_first,
    )
    info = BackboneInfo(
        name=name,
        kind="clip3d",
        feature_dim=feature_dim,
        clip_len=clip_len,
        input_size=input_size,
        mean=PYSLOWFAST_MEAN,
        std=PYSLOWFAST_STD,
    ).with_input_channels(in_channels, modality)
    return I3DResNet(info, trunk, num_classes=num_classes, dropout=dropout)


VARIANTS: dict[str, dict] = {
    # nonlocal_at=((), (), (), ()) gives the plain I3D ResNet-50
    "i3d_nl_r50": {"doc": "I3D ResNet-50 + 5 non-local blocks (res3: 1, 3; res4: 1, 3, 5): D=2048, 8x224x224 clips.",
                   "layers": R50_LAYERS, "widths": R50_WIDTHS, "input_size": 224},
    # the public checkpoints' architectures, exactly (extract/backbones/converters/)
    "i3d_8x8_r50": {"doc": "I3D R50 8x8 as PySlowFast / pytorchvideo's I3D_8x8_R50 (Kinetics-400 checkpoints): no "
                           "non-local block, zero temporal padding, D=2048, 8x224x224 clips.",
                    "layers": R50_LAYERS, "widths": R50_WIDTHS, "input_size": 224, "nonlocal_at": ((), (), (), ()),
                    "temporal_padding": "zeros"},
    "i3d_nln_8x8_r50": {"doc": "I3D NLN R50 8x8 as PySlowFast's I3D_NLN_8x8_R50: 5 non-local blocks that max-pool "
                               "their input before phi and g, zero temporal padding, D=2048, 8x224x224 clips.",
                        "layers": R50_LAYERS, "widths": R50_WIDTHS, "input_size": 224,
                        "nonlocal_at": R50_NONLOCAL_AT, "temporal_padding": "zeros", "nl_pool_first": True},
    "i3d_nl_tiny": {"doc": "Test / CPU-smoke variant: blocks 1,2,2,1 of widths 8..64, 2 non-local blocks, D=256, "
                           "4x32x32.", "layers": TINY_LAYERS, "widths": TINY_WIDTHS, "input_size": 32,
                    "defaults": {"clip_len": 4, "nonlocal_at": TINY_NONLOCAL_AT}},
}
register_variants(register_backbone, _i3d, VARIANTS)


def _inflated(key: str, theirs: Tensor, ours: Tensor) -> Tensor:
    """A 2D tensor made to fit ``ours``: kernels spread over time as w / t, RGB averaged."""
    if theirs.ndim == 4 and ours.ndim == 5:
        if theirs.shape[1] == 3 and ours.shape[1] != 3:  # RGB first conv into a flow model
            theirs = _average_kernel(theirs, ours.shape[1])
        t = ours.shape[2]
        theirs = (
            theirs.unsqueeze(2).expand(-1, -1, t, -1, -1) / t
        )  # (O, I, h, w) -> (O, I, t, h, w)
    if theirs.shape != ours.shape:
        raise WeightsError(
            f"{key}: 2D shape {tuple(theirs.shape)} does not inflate to {tuple(ours.shape)}; "
            "is the 2D ResNet of the same depth and widths?"
        )
    return theirs


def inflate_from_2d(
    model: I3DResNet, resnet2d: Mapping[str, Tensor] | str | os.PathLike[str]
) -> I3DResNet:
    """Fill ``model`` with a 2D ResNet's weights, inflated (I3D, Carreira and Zisserman 2017).

    Every conv kernel ``w`` (O, I, h, w) becomes ``w / t`` repeated over its t temporal
    taps; BatchNorm tensors are copied; an RGB first conv is averaged over channels for a
    model with other input channels. Non-local blocks have no 2D counterpart and keep their
    weights (identity at initialisation). The 2D classifier (``fc.*``) is copied only when
    ``model`` has one of the same shape.

    Args:
        model: an :class:`I3DResNet` (e.g. ``get_backbone("i3d_nl_r50")``).
        resnet2d: a torchvision-layout ResNet state_dict of the same depth and widths
            (``torchvision.models.resnet50().state_dict()``), or the path of a local file
            holding one (read with ``weights_only=True``).

    Returns:
        ``model``, filled in place.

    Raises:
        WeightsError: keys or shapes that do not fit (the first few offending keys listed).
    """
    if isinstance(resnet2d, (str, os.PathLike)):
        resnet2d = _read_state_dict(Path(resnet2d))
    own = model.state_dict()

    def counterpart(key: str) -> bool:
        return ".nl." not in key and not key.startswith("fc.")

    missing = [k for k in own if counterpart(k) and k not in resnet2d]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in resnet2d if counterpart(k) and k not in own]
    if missing or unexpected:
        raise WeightsError(
            f"the 2D state_dict does not fit {model.info.name}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}; pass a torchvision ResNet of the same depth and widths"
        )
    inflated = {
        k: _inflated(k, v, own[k])
        for k, v in resnet2d.items()
        if k in own and (counterpart(k) or v.shape == own[k].shape)
    }
    model.load_state_dict(inflated, strict=False)
    logger.info("%s: inflated %d tensors from a 2D ResNet", model.info.name, len(inflated))
    return model
