"""NeXtVLAD pooling (Lin, Xiao, Fan 2018, "NeXtVLAD: An Efficient Neural Network to Aggregate
Frame-level Features for Large-scale Video Classification").

Each valid clip ``x_t`` (size ``D``) is expanded to ``x'_t = W_e x_t + b_e`` (size ``lambda D``)
and split into ``G`` groups ``x'_{t,g}`` of size ``lambda D / G``::

    alpha_{t,g}   = sigmoid(w_g . x'_t + b_g)                       group attention
    a_{t,g,k}     = softmax_k(BN(W_a x'_t)_{g,k})                   BN over valid clips only
    v_{k,j}       = sum_{t,g} alpha_{t,g} a_{t,g,k} (x'_{t,g,j} - c_{k,j})
    out           = BN(flatten(intra_normalise(v)))                 size Kc * lambda D / G

Padded clips get ``alpha a = 0``. The head then applies dropout, a projection (Linear, BN,
ReLU), SE context gating and the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from heads._masking import MaskedBatchNorm1d, prepare_clips


class NeXtVLAD(nn.Module):
    """Grouped NetVLAD with expansion and sigmoid group attention; ``Kc * lambda D / G`` out."""

    def __init__(
        self, in_dim: int, num_clusters: int = 64, *, expansion: int = 2, groups: int = 8
    ) -> None:
        """Create the pooling.

        Args:
            in_dim: clip feature size ``D``.
            num_clusters: clusters ``Kc``.
            expansion: expansion factor ``lambda``.
            groups: number of groups ``G``; must divide ``lambda D``.
        """
        super().__init__()
        if min(num_clusters, expansion, groups) < 1:
            raise ValueError("num_clusters, expansion and groups must be >= 1, got "
                             f"{num_clusters}, {expansion}, {groups}")
        expanded = expansion * in_dim
        if expanded % groups:
            raise ValueError(
                f"groups={groups} must divide expansion * in_dim = {expanded}; "
                "pick a divisor such as 1, 2, 4 or 8 that fits"
            )
        self.in_dim = in_dim
        self.num_clusters = num_clusters
        self.groups = groups
        self.group_dim = expanded // groups
        self.out_dim = num_clusters * self.group_dim
        self.expand = nn.Linear(in_dim, expanded)
        self.group_attention = nn.Linear(expanded, groups)
        self.assign_fc = nn.Linear(expanded, groups * num_clusters, bias=False)
        self.assign_bn = MaskedBatchNorm1d(groups * num_clusters)
        self.centres = nn.Parameter(torch.randn(num_clusters, self.group_dim) / expanded**0.5)
        self.vlad_bn = nn.BatchNorm1d(self.out_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Pool ``(B, K, D)`` clips into ``(B, Kc * lambda D / G)``."""
        x, mask = prepare_clips(x, mask, in_dim=self.in_dim)
        b, k = mask.shape
        expanded = self.expand(x)  # (B, K, D) -> (B, K, lambda D)
        attention = torch.sigmoid(self.group_attention(expanded))  # (B, K, lambda D) -> (B, K, G)
        logits = self.assign_bn(self.assign_fc(expanded), mask)  # -> (B, K, G * Kc)
        logits = logits.view(b, k, self.groups, self.num_clusters)  # -> (B, K, G, Kc)
        a = torch.softmax(logits, dim=-1) * attention.unsqueeze(-1)
        a = torch.where(mask[:, :, None, None], a, torch.zeros((), dtype=a.dtype, device=a.device))
        a = a.reshape(b, k * self.groups, self.num_clusters)  # (B, K, G, Kc) -> (B, K G, Kc)
        grouped = expanded.reshape(b, k * self.groups, self.group_dim)  # -> (B, K G, lambda D / G)
        vlad = a.transpose(1, 2) @ grouped  # (B, Kc, K G) @ (B, K G, D') -> (B, Kc, D')
        vlad = vlad - a.sum(1).unsqueeze(-1) * self.centres  # (B, Kc, 1) * (Kc, D') -> (B, Kc, D')
        vlad = F.normalize(vlad, dim=-1)  # intra-normalisation
        return self.vlad_bn(vlad.flatten(1))  # (B, Kc, D') -> (B, Kc * D')
