"""The generic pooling head (pooling -> MLP + gating -> classifier) and mean / max pooling.

Every registered head is a :class:`PooledHead`::

    x (B, K, D), mask (B, K)
        |  pooling over the valid clips       (MeanPooling, NetVLAD, NeXtVLAD, LSTMPooling, ...)
        v
    (B, P)
        |  VideoMLP: [dropout -> Linear -> BN -> ReLU] per hidden layer -> context gating
        v
    (B, F)      <- forward_features(x, mask); F = feature_dim
        |  classifier: logistic (Linear) or MixtureOfExperts
        v
    (B, C)      <- forward(x, mask): logits

A pooling module has ``in_dim``, ``out_dim`` and ``forward(x, mask) -> (B, out_dim)``; it takes
the raw ``(x, mask)`` of the head and is responsible for exact masking.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from heads._masking import prepare_clips
from heads.gating import ContextGating, SEContextGating
from heads.moe import ClassifierKind, make_classifier

GatingKind = Literal["none", "context", "se"]
GATINGS: tuple[str, ...] = ("none", "context", "se")


class MeanPooling(nn.Module):
    """Average of the valid clips; a video without valid clips pools to zeros."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``(B, K, D)`` clips into ``(B, D)``."""
        x, mask = prepare_clips(x, mask, in_dim=self.in_dim)
        count = mask.sum(1, keepdim=True).clamp(min=1).to(x.dtype)  # (B, K) -> (B, 1)
        return x.sum(1) / count  # (B, K, D) -> (B, D)


class MaxPooling(nn.Module):
    """Feature-wise maximum over the valid clips; a video without valid clips pools to zeros."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = in_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``(B, K, D)`` clips into ``(B, D)``."""
        x, mask = prepare_clips(x, mask, in_dim=self.in_dim)
        neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
        pooled = torch.where(mask.unsqueeze(-1), x, neg_inf).amax(1)  # (B, K, D) -> (B, D)
        return torch.where(mask.any(1, keepdim=True), pooled, torch.zeros_like(pooled))


class VideoMLP(nn.Module):
    """Hidden layers ``dropout -> Linear -> BN -> ReLU`` followed by optional context gating.

    With no hidden layer it is the optional dropout and gating alone. The first hidden layer is
    the "projection" of NetVLAD-style descriptors (Miech et al. 2017: ``hidden1``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int] = (),
        *,
        dropout: float = 0.0,
        gating: GatingKind = "none",
        se_reduction: int = 8,
    ) -> None:
        """Create the MLP.

        Args:
            in_dim: size of the pooled descriptor.
            hidden_dims: sizes of the hidden layers; empty for none.
            dropout: dropout probability before every linear layer (and before the classifier
                when there is no hidden layer).
            gating: ``"none"``, ``"context"`` (:class:`ContextGating`) or ``"se"``
                (:class:`SEContextGating`), applied to the last layer's output.
            se_reduction: bottleneck ratio of the SE gating.
        """
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if gating not in GATINGS:
            raise ValueError(f"unknown gating {gating!r}; choose one of {', '.join(GATINGS)}")
        if any(h < 1 for h in hidden_dims):
            raise ValueError(f"hidden sizes must be >= 1, got {tuple(hidden_dims)}")
        layers: list[nn.Module] = []
        dim = in_dim
        for hidden in hidden_dims:
            layers += [nn.Dropout(dropout), nn.Linear(dim, hidden, bias=False),
                       nn.BatchNorm1d(hidden), nn.ReLU()]
            dim = hidden
        if not hidden_dims and dropout > 0:
            layers.append(nn.Dropout(dropout))
        if gating == "context":
            layers.append(ContextGating(dim))
        elif gating == "se":
            layers.append(SEContextGating(dim, reduction=se_reduction))
        self.layers = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = dim

    def forward(self, x: Tensor) -> Tensor:
        """Map ``(B, P)`` to ``(B, F)``."""
        return self.layers(x)


class PooledHead(nn.Module):
    """A pooling module, a :class:`VideoMLP` and a classifier (see the module docstring)."""

    def __init__(
        self, pooling: nn.Module, mlp: VideoMLP, classifier: nn.Module, *, num_classes: int
    ) -> None:
        """Assemble the head.

        Args:
            pooling: module with ``in_dim``, ``out_dim`` and ``forward(x, mask) -> (B, out_dim)``.
            mlp: maps ``(B, pooling.out_dim)`` to ``(B, mlp.out_dim)``.
            classifier: maps ``(B, mlp.out_dim)`` to ``(B, num_classes)`` logits.
            num_classes: number of classes ``C``.
        """
        super().__init__()
        if mlp.in_dim != pooling.out_dim:
            raise ValueError(f"mlp expects {mlp.in_dim} inputs, pooling gives {pooling.out_dim}")
        self.pooling = pooling
        self.mlp = mlp
        self.classifier = classifier
        self.in_dim: int = pooling.in_dim
        self.feature_dim: int = mlp.out_dim
        self.num_classes = num_classes

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Video descriptors ``(B, feature_dim)``: the classifier's input."""
        return self.mlp(self.pooling(x, mask))  # (B, K, D) -> (B, F)

    def forward_head(self, features: Tensor) -> Tensor:
        """Logits ``(B, C)`` from descriptors ``(B, feature_dim)``."""
        return self.classifier(features)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Logits ``(B, C)`` for clip features ``(B, K, D)`` and a ``(B, K)`` bool mask."""
        return self.forward_head(self.forward_features(x, mask))  # (B, K, D) -> (B, C)


def assemble_head(
    pooling: nn.Module,
    *,
    num_classes: int,
    hidden_dim: int | None,
    gating: GatingKind,
    classifier: ClassifierKind,
    num_experts: int,
    dropout: float,
    se_reduction: int = 8,
) -> PooledHead:
    """Put ``pooling`` -> ``VideoMLP`` (one hidden layer or none) -> classifier together."""
    hidden_dims = () if hidden_dim is None else (hidden_dim,)
    mlp = VideoMLP(pooling.out_dim, hidden_dims, dropout=dropout, gating=gating,
                   se_reduction=se_reduction)
    head_classifier = make_classifier(classifier, mlp.out_dim, num_classes, num_experts=num_experts)
    return PooledHead(pooling, mlp, head_classifier, num_classes=num_classes)
