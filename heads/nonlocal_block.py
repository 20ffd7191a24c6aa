"""A non-local block over the clip axis (Wang, Girshick, Gupta, He 2018, "Non-local Neural
Networks"), embedded-Gaussian form with scaled dot products.

For the valid clips ``x_i`` of a video (inner size ``d``, by default ``D // 2``)::

    f_ij = softmax_j( theta(x_i) . phi(x_j) / sqrt(d) )      over valid keys j only
    y_i  = sum_j f_ij g(x_j)
    z_i  = BN(W_z y_i) + x_i                                 BN over valid clips, gamma = 0 at init

With the BN scale initialised to zero the block starts as the identity. Padded clips are never
keys, do not enter the BN statistics, and come out as zeros (their input after masking).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from heads._masking import MaskedBatchNorm1d, prepare_clips


class NonLocalBlock(nn.Module):
    """Residual embedded-Gaussian self-attention over clips: ``(B, K, D) -> (B, K, D)``."""

    def __init__(self, dim: int, inner_dim: int | None = None) -> None:
        """Create the block.

        Args:
            dim: clip feature size ``D``.
            inner_dim: size ``d`` of the embeddings theta, phi, g; default ``max(1, D // 2)``.
        """
        super().__init__()
        inner = max(1, dim // 2) if inner_dim is None else inner_dim
        if dim < 1 or inner < 1:
            raise ValueError(f"dim and inner_dim must be >= 1, got {dim} and {inner}")
        self.dim = dim
        self.inner_dim = inner
        self.theta = nn.Linear(dim, inner)
        self.phi = nn.Linear(dim, inner)
        self.g = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)
        self.bn = MaskedBatchNorm1d(dim)
        nn.init.zeros_(self.bn.weight)

    def attention(self, x: Tensor, mask: Tensor) -> Tensor:
        """Attention weights ``(B, K, K)`` of prepared clips; rows sum to 1 over valid keys.

        A video without any valid clip gets all-zero weights.
        """
        queries, keys = self.theta(x), self.phi(x)  # (B, K, D) -> (B, K, d)
        scores = queries @ keys.transpose(1, 2) / math.sqrt(self.inner_dim)  # -> (B, K, K)
        key_valid = mask.unsqueeze(1)  # (B, K) -> (B, 1, K)
        scores = torch.where(key_valid, scores, torch.tensor(float("-inf"), dtype=scores.dtype,
                                                             device=scores.device))
        has_key = mask.any(1)[:, None, None]  # (B, K) -> (B, 1, 1)
        scores = torch.where(has_key, scores, torch.zeros_like(scores))
        weights = torch.softmax(scores, dim=-1)
        return torch.where(key_valid, weights, torch.zeros_like(weights))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Refine ``(B, K, D)`` clip features; padded clips come out as zeros."""
        x, mask = prepare_clips(x, mask, in_dim=self.dim)
        y = self.attention(x, mask) @ self.g(x)  # (B, K, K) @ (B, K, d) -> (B, K, d)
        z = self.bn(self.out(y), mask) + x  # (B, K, d) -> (B, K, D)
        return torch.where(mask.unsqueeze(-1), z, x)
