"""torchvision's newer video models as backbones: S3D, MViT v1-B / v2-S, Swin3D T/S/B.

Each wraps torchvision's builder (``weights=None``) and keeps its trunk under torchvision's
module names, so torchvision's Kinetics-400 files load with one converter that moves the
classifier to our ``fc`` (``classifier.1`` / ``head.1`` / ``head`` -> ``fc``). Features are
the trunk's output before the classifier, ``(B, D)``:

- S3D (Xie et al. 2018): ``features`` -> ``avgpool`` (2x7x7, stride 1) -> mean over the
  rest, D=1024. torchvision applies its 1x1x1 classifier conv before that mean; the conv
  is linear, so ``fc`` on our feature gives torchvision's logits.
- MViT (Fan et al. 2021; Li et al. 2022): the class token after the last norm, D=768.
  Its positional sizes are fixed: clips must be exactly 16x224x224.
- Swin3D (Liu et al. 2022): ``norm`` -> global average pool, D=768 (T, S) or 1024 (B).

Input transforms, clip length and the weights' metadata are read from torchvision's enums
(see :mod:`extract.backbones.pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn
from torchvision.models import video as tv_video

from extract.backbones.pretrained import (
    PretrainedWeights,
    StateDict,
    default_weights,
    from_torchvision,
    register_all,
)
from extract.backbones.registry import Backbone, BackboneInfo, register_backbone
from extract.backbones.variants import register_variants

__all__ = ["VARIANTS", "MViTBackbone", "S3DBackbone", "Swin3DBackbone", "classifier_to_fc"]


def classifier_to_fc(prefix: str) -> Callable[[StateDict], StateDict]:
    """A converter moving torchvision's classifier ``PREFIX.weight/bias`` to ``fc.*``.

    A 1x1x1 classifier conv kernel ``(C, D, 1, 1, 1)`` becomes a ``(C, D)`` matrix.
    """

    def convert(state: StateDict) -> StateDict:
        out = {k: v for k, v in state.items() if not k.startswith(f"{prefix}.")}
        for part in ("weight", "bias"):
            key = f"{prefix}.{part}"
            if key in state:
                value = state[key]
                out[f"fc.{part}"] = value.flatten(1) if value.ndim > 2 else value  # (C, D, 1, 1, 1) -> (C, D)
        return out

    return convert


class S3DBackbone(Backbone):
    """torchvision's S3D trunk: ``(B, 3, T, H, W)`` -> ``(B, 1024)``."""

    # features: stem (0-4), mixed 3b-3c (5-6), pool + mixed 4b-4f (7-12), pool + mixed 5b-5c (13-15)
    stage_names = (
        tuple(f"features.{i}" for i in range(5)),
        ("features.5", "features.6"),
        tuple(f"features.{i}" for i in range(7, 13)),
        tuple(f"features.{i}" for i in range(13, 16)),
    )

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: the trunk, torchvision's 2x7x7 average, global mean."""
        self.check_input(x)
        x = self.avgpool(self.features(x))  # (B, C, T, H, W) -> (B, D, t, h, w)
        return x.mean(dim=(2, 3, 4))  # (B, D, t, h, w) -> (B, D)


class MViTBackbone(Backbone):
    """torchvision's MViT trunk: ``(B, 3, 16, 224, 224)`` -> ``(B, 768)`` class token."""

    # stem, then the four scale stages (1, 2, 11, 2 blocks in both v1-B and v2-S)
    stage_names = (
        ("conv_proj", "pos_encoding"),
        ("blocks.0",),
        ("blocks.1", "blocks.2"),
        tuple(f"blocks.{i}" for i in range(3, 14)),
        ("blocks.14", "blocks.15", "norm"),
    )

    def input_shape(self) -> tuple[int, int, int]:
        """The one ``(T, H, W)`` the positional sizes allow."""
        stride = self.conv_proj.stride
        t = self.pos_encoding.temporal_size * stride[0]
        h, w = (s * k for s, k in zip(self.pos_encoding.spatial_size, stride[1:]))
        return t, h, w

    def check_input(self, x: Tensor) -> None:
        """As the base class, and ``(T, H, W)`` must be :meth:`input_shape`."""
        super().check_input(x)
        if tuple(x.shape[2:]) != self.input_shape():
            t, h, w = self.input_shape()
            raise ValueError(
                f"{self.info.name} takes clips of exactly {t}x{h}x{w} (T x H x W, fixed positional sizes), "
                f"got {tuple(x.shape[2:])}; use --frames {t} --crop {h}"
            )

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: patches, blocks, norm, class token."""
        self.check_input(x)
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # (B, C, T, H, W) -> (B, t*h*w, D0)
        x = self.pos_encoding(x)  # (B, t*h*w, D0) -> (B, 1 + t*h*w, D0): class token prepended
        thw = (self.pos_encoding.temporal_size, *self.pos_encoding.spatial_size)
        for block in self.blocks:
            x, thw = block(x, thw)  # pooled attention shrinks the token grid
        return self.norm(x)[:, 0]  # (B, 1 + N, D) -> (B, D)


class Swin3DBackbone(Backbone):
    """torchvision's Swin3D trunk: ``(B, 3, T, H, W)`` -> ``(B, D)``."""

    # features: stage 1, (merge, stage 2), (merge, stage 3), (merge, stage 4)
    stage_names = (
        ("patch_embed", "pos_drop"),
        ("features.0",),
        ("features.1", "features.2"),
        ("features.3", "features.4"),
        ("features.5", "features.6", "norm"),
    )

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, C, T, H, W)`` -> ``(B, D)``: windowed attention stages, norm, global average."""
        self.check_input(x)
        x = self.features(self.pos_drop(self.patch_embed(x)))  # (B, C, T, H, W) -> (B, t, h, w, D)
        x = self.norm(x).permute(0, 4, 1, 2, 3)  # (B, t, h, w, D) -> (B, D, t, h, w)
        return self.avgpool(x).flatten(1)  # (B, D, 1, 1, 1) -> (B, D)


# Per family: the Backbone class, the trunk's module names, the classifier's key prefix.
_FAMILIES: dict[str, tuple[type[Backbone], tuple[str, ...], str]] = {
    "s3d": (S3DBackbone, ("features", "avgpool"), "classifier.1"),
    "mvit": (MViTBackbone, ("conv_proj", "pos_encoding", "blocks", "norm"), "head.1"),
    "swin3d": (Swin3DBackbone, ("patch_embed", "pos_drop", "features", "norm", "avgpool"), "head"),
}
# Per variant: family, torchvision builder, its Weights enum, D.
_ARCHS: dict[str, tuple[str, Callable[..., nn.Module], type, int]] = {
    "s3d": ("s3d", tv_video.s3d, tv_video.S3D_Weights, 1024),
    "mvit_v1_b": ("mvit", tv_video.mvit_v1_b, tv_video.MViT_V1_B_Weights, 768),
    "mvit_v2_s": ("mvit", tv_video.mvit_v2_s, tv_video.MViT_V2_S_Weights, 768),
    "swin3d_t": ("swin3d", tv_video.swin3d_t, tv_video.Swin3D_T_Weights, 768),
    "swin3d_s": ("swin3d", tv_video.swin3d_s, tv_video.Swin3D_S_Weights, 768),
    "swin3d_b": ("swin3d", tv_video.swin3d_b, tv_video.Swin3D_B_Weights, 1024),
}


def _weights(name: str) -> list[PretrainedWeights]:
    family, _, enum_cls, dim = _ARCHS[name]
    return from_torchvision(name, enum_cls, feature_dim=dim, converter=classifier_to_fc(_FAMILIES[family][2]))


def _video_transformer(
    name: str,
    *,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
    clip_len: int | None = None,
) -> Backbone:
    """A torchvision video model ``name`` (``_ARCHS``) as a backbone; info from its default weights."""
    family, builder, _, dim = _ARCHS[name]
    cls, trunk_names, _ = _FAMILIES[family]
    net = builder(weights=None)  # never downloads
    t = default_weights(name).transforms
    info = BackboneInfo(
        name=name,
        kind="clip3d",
        feature_dim=dim,
        clip_len=clip_len or t.clip_len,
        input_size=t.crop_size,
        mean=t.mean,
        std=t.std,
    ).with_input_channels(in_channels, modality)
    trunk = {n: getattr(net, n) for n in trunk_names}
    return cls(info, trunk, num_classes=num_classes, dropout=dropout)


VARIANTS: dict[str, dict] = {
    "s3d": {"doc": "S3D (separable 3D Inception): D=1024, 224 px, Kinetics normalisation; torchvision's "
                   "Kinetics-400 weights were evaluated on 128-frame clips (--frames for shorter ones, >= 16)."},
    "mvit_v1_b": {"doc": "MViT v1-B: D=768 class token, exactly 16x224x224 clips, mean/std 0.45/0.225."},
    "mvit_v2_s": {"doc": "MViT v2-S: D=768 class token, exactly 16x224x224 clips, mean/std 0.45/0.225."},
    "swin3d_t": {"doc": "Swin3D-T: D=768, 32-frame clips at 224 px (any size works), ImageNet normalisation."},
    "swin3d_s": {"doc": "Swin3D-S: D=768, 32-frame clips at 224 px (any size works), ImageNet normalisation."},
    "swin3d_b": {"doc": "Swin3D-B: D=1024, 32-frame clips at 224 px (any size works), ImageNet normalisation; "
                        "Kinetics-400 weights from ImageNet-1K or (@kinetics400_imagenet22k) ImageNet-22K init."},
}
register_variants(register_backbone, _video_transformer, VARIANTS)
for _name in _ARCHS:
    register_all(_weights(_name))
