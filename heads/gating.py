"""Context Gating (Miech et al. 2017) and its squeeze-and-excitation form (Lin et al. 2018).

Both act on a video-level descriptor ``(B, F)`` and re-weight each of its features by a gate in
(0, 1) computed from the whole descriptor:

    ContextGating:    y = x * sigmoid(BN(W x))
    SEContextGating:  y = x * sigmoid(W2 ReLU(BN(W1 x))),   W1: F -> F / r,  W2: F / r -> F
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ContextGating(nn.Module):
    """``y = x * sigmoid(BN(W x))`` (Miech, Laptev, Sivic 2017, eq. 2).

    Without batch normalisation the gate gets a bias instead: ``sigmoid(W x + b)``.
    """

    def __init__(self, dim: int, *, batch_norm: bool = True) -> None:
        """Create the gate.

        Args:
            dim: size ``F`` of the gated descriptor.
            batch_norm: normalise the gate pre-activation over the batch.
        """
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.fc = nn.Linear(dim, dim, bias=not batch_norm)
        self.bn = nn.BatchNorm1d(dim) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Gate ``x`` of shape ``(B, F)``."""
        return x * torch.sigmoid(self.bn(self.fc(x)))  # (B, F) -> (B, F)


class SEContextGating(nn.Module):
    """Squeeze-and-excitation context gating of NeXtVLAD (Lin et al. 2018, sec. 3.3).

    ``y = x * sigmoid(W2 ReLU(BN(W1 x)))`` with a bottleneck of ``F // reduction`` units.
    """

    def __init__(self, dim: int, *, reduction: int = 8) -> None:
        """Create the gate.

        Args:
            dim: size ``F`` of the gated descriptor.
            reduction: bottleneck ratio ``r``; the bottleneck has ``max(1, F // r)`` units.
        """
        super().__init__()
        if dim < 1 or reduction < 1:
            raise ValueError(f"dim and reduction must be >= 1, got {dim} and {reduction}")
        self.dim = dim
        bottleneck = max(1, dim // reduction)
        self.squeeze = nn.Linear(dim, bottleneck, bias=False)
        self.bn = nn.BatchNorm1d(bottleneck)
        self.excite = nn.Linear(bottleneck, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Gate ``x`` of shape ``(B, F)``."""
        squeezed = torch.relu(self.bn(self.squeeze(x)))  # (B, F) -> (B, F / r)
        return x * torch.sigmoid(self.excite(squeezed))  # (B, F / r) -> (B, F)
