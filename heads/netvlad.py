"""NetVLAD, NetRVLAD and Soft-DBoF pooling (Miech, Laptev, Sivic 2017, "Learnable pooling with
Context Gating for video classification"; NetVLAD: Arandjelovic et al. 2016).

All three start from the same soft-assignment of every valid clip ``x_t`` to ``Kc`` clusters::

    a_t = softmax(BN(W x_t))                      (W: D -> Kc, BN over valid clips only)

    NetVLAD:   v_k = sum_t a_{t,k} (x_t - c_k)    intra-normalise each v_k, flatten, L2-normalise
    NetRVLAD:  v_k = sum_t a_{t,k} x_t            intra-normalise, flatten, L2-normalise
    Soft-DBoF: s   = L2(sum_t a_t)  [, L2(max_t a_t)]

Padded clips get ``a_t = 0`` and so add nothing to any sum. The projection to the hidden size
is the first layer of the head's :class:`~heads.pooling.VideoMLP`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heads._masking import MaskedBatchNorm1d, prepare_clips


class SoftAssignment(nn.Module):
    """``a_t = softmax(BN(W x_t))`` over ``Kc`` clusters; zero for padded clips."""

    def __init__(self, in_dim: int, num_clusters: int) -> None:
        super().__init__()
        if num_clusters < 1:
            raise ValueError(f"num_clusters must be >= 1, got {num_clusters}")
        self.fc = nn.Linear(in_dim, num_clusters, bias=False)
        self.bn = MaskedBatchNorm1d(num_clusters)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """Assign prepared clips ``(B, K, D)`` to clusters: ``(B, K, Kc)``."""
        logits = self.bn(self.fc(x), mask)  # (B, K, D) -> (B, K, Kc)
        a = torch.softmax(logits, dim=-1)
        return torch.where(mask.unsqueeze(-1), a, torch.zeros((), dtype=a.dtype, device=a.device))


class NetVLAD(nn.Module):
    """Residuals to learned centres, soft-assigned, intra- and L2-normalised: ``Kc * D`` out."""

    def __init__(self, in_dim: int, num_clusters: int = 32) -> None:
        """Create the pooling.

        Args:
            in_dim: clip feature size ``D``.
            num_clusters: number of clusters ``Kc``.
        """
        super().__init__()
        self.in_dim = in_dim
        self.num_clusters = num_clusters
        self.out_dim = in_dim * num_clusters
        self.assign = SoftAssignment(in_dim, num_clusters)
        self.centres = nn.Parameter(torch.randn(num_clusters, in_dim) / in_dim**0.5)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``(B, K, D)`` clips into ``(B, Kc * D)``."""
        x, mask = prepare_clips(x, mask, in_dim=self.in_dim)
        a = self.assign(x, mask)  # (B, K, Kc)
        vlad = a.transpose(1, 2) @ x  # (B, Kc, K) @ (B, K, D) -> (B, Kc, D)
        vlad = vlad - a.sum(1).unsqueeze(-1) * self.centres  # (B, Kc, 1) * (Kc, D) -> (B, Kc, D)
        vlad = F.normalize(vlad, dim=-1)  # intra-normalisation
        return F.normalize(vlad.flatten(1), dim=-1)  # (B, Kc, D) -> (B, Kc * D)


class NetRVLAD(nn.Module):
    """NetVLAD without centres ("residual-less"): soft-assigned sums of the clips."""

    def __init__(self, in_dim: int, num_clusters: int = 32) -> None:
        """Create the pooling; arguments as :class:`NetVLAD`."""
        super().__init__()
        self.in_dim = in_dim
        self.num_clusters = num_clusters
        self.out_dim = in_dim * num_clusters
        self.assign = SoftAssignment(in_dim, num_clusters)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``(B, K, D)`` clips into ``(B, Kc * D)``."""
        x, mask = prepare_clips(x, mask, in_dim=self.in_dim)
        a = self.assign(x, mask)  # (B, K, Kc)
        rvlad = F.normalize(a.transpose(1, 2) @ x, dim=-1)  # (B, Kc, K) @ (B, K, D) -> (B, Kc, D)
        return F.normalize(rvlad.flatten(1), dim=-1)  # (B, Kc, D) -> (B, Kc * D)


class SoftDBoF(nn.Module):
    """Soft deep bag of features: the L2-normalised sum (and optionally max) of assignments."""

    def __init__(self, in_dim: int, num_clusters: int = 256, *, max_pool: bool = False) -> None:
        """Create the pooling.

        Args:
            in_dim: clip feature size ``D``.
            num_clusters: number of clusters (visual words) ``Kc``.
            max_pool: also concatenate the L2-normalised maximum over clips (``2 Kc`` out).
        """
        super().__init__()
        self.in_dim = in_dim
        self.num_clusters = num_clusters
        self.max_pool = max_pool
        self.out_dim = num_clusters * (2 if max_pool else 1)
        self.assign = SoftAssignment(in_dim, num_clusters)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``(B, K, D)`` clips into ``(B, Kc)`` or ``(B, 2 Kc)``."""
        x, mask = prepare_clips(x, mask, in_dim=self.in_dim)
        a = self.assign(x, mask)  # (B, K, Kc)
        pooled = F.normalize(a.sum(1), dim=-1)  # (B, K, Kc) -> (B, Kc)
        if not self.max_pool:
            return pooled
        # soft-assignments are positive and padded clips have a = 0, so the max is exact
        return torch.cat([pooled, F.normalize(a.amax(1), dim=-1)], dim=-1)  # -> (B, 2 Kc)
