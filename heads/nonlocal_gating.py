"""The non-local gating head of the RippleAI/SNU Multi-Moments-in-Time report.

::

    x (B, K, D), mask (B, K)
        |  NonLocalBlock over the clip axis (residual, masked)     (B, K, D)
        v
        |  learnable pooling: NetVLAD | NeXtVLAD | LSTM | BiLSTM   (B, P)
        v
        |  MLP (Linear, BN, ReLU) + Context Gating                 (B, F) = forward_features
        v
        |  classifier: logistic | MoE                              (B, C) logits

Related: Tang et al. 2018, "Non-local NetVLAD Encoding for Video Classification" (non-local
relations between NetVLAD cluster descriptors); here the non-local block acts on the clips.
"""

from __future__ import annotations

from torch import Tensor, nn

from heads.nonlocal_block import NonLocalBlock


class NonLocalPooling(nn.Module):
    """A :class:`NonLocalBlock` over the clips followed by a pooling module."""

    def __init__(self, pooling: nn.Module, *, inner_dim: int | None = None) -> None:
        """Create the pooling.

        Args:
            pooling: module with ``in_dim``, ``out_dim`` and ``forward(x, mask)``.
            inner_dim: inner size of the non-local block; default ``in_dim // 2``.
        """
        super().__init__()
        self.in_dim: int = pooling.in_dim
        self.out_dim: int = pooling.out_dim
        self.block = NonLocalBlock(self.in_dim, inner_dim)
        self.pooling = pooling

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``(B, K, D)`` clips into ``(B, out_dim)``."""
        return self.pooling(self.block(x, mask), mask)  # (B, K, D) -> (B, K, D) -> (B, P)
