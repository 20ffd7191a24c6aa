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

from heads.lstm import LSTMPooling
from heads.moe import ClassifierKind
from heads.netvlad import NetVLAD
from heads.nextvlad import NeXtVLAD
from heads.nonlocal_block import NonLocalBlock
from heads.pooling import PooledHead, assemble_head
from heads.registry import register_head


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


def _nonlocal_head(pooling: nn.Module, *, inner_dim: int | None, num_classes: int,
                   hidden_dim: int | None, gating: bool, classifier: ClassifierKind,
                   num_experts: int, dropout: float) -> PooledHead:
    return assemble_head(NonLocalPooling(pooling, inner_dim=inner_dim), num_classes=num_classes,
                         hidden_dim=hidden_dim, gating="context" if gating else "none",
                         classifier=classifier, num_experts=num_experts, dropout=dropout)


@register_head("nonlocal_netvlad")
def nonlocal_netvlad(
    *,
    in_dim: int,
    num_classes: int,
    num_clusters: int = 32,
    inner_dim: int | None = None,
    hidden_dim: int | None = 512,
    gating: bool = True,
    classifier: ClassifierKind = "logistic",
    num_experts: int = 2,
    dropout: float = 0.0,
) -> PooledHead:
    """Non-local block -> NetVLAD -> MLP + context gating -> classifier.

    Args:
        in_dim: clip feature size ``D``.
        num_classes: number of classes ``C``.
        num_clusters: NetVLAD clusters ``Kc``.
        inner_dim: inner size of the non-local block (default ``D // 2``).
        hidden_dim: units of the MLP layer; ``None`` for none.
        gating: context gating after the MLP.
        classifier: ``"logistic"`` or ``"moe"``.
        num_experts: experts per class of the ``"moe"`` classifier.
        dropout: dropout before the linear layers.
    """
    return _nonlocal_head(NetVLAD(in_dim, num_clusters), inner_dim=inner_dim,
                          num_classes=num_classes, hidden_dim=hidden_dim, gating=gating,
                          classifier=classifier, num_experts=num_experts, dropout=dropout)


@register_head("nonlocal_nextvlad")
def nonlocal_nextvlad(
    *,
    in_dim: int,
    num_classes: int,
    num_clusters: int = 64,
    expansion: int = 2,
    groups: int = 8,
    inner_dim: int | None = None,
    hidden_dim: int | None = 512,
    gating: bool = True,
    classifier: ClassifierKind = "logistic",
    num_experts: int = 2,
    dropout: float = 0.0,
) -> PooledHead:
    """Non-local block -> NeXtVLAD -> MLP + context gating -> classifier.

    ``expansion`` and ``groups`` are those of :class:`~heads.nextvlad.NeXtVLAD`; the other
    arguments are those of :func:`nonlocal_netvlad`.
    """
    pooling = NeXtVLAD(in_dim, num_clusters, expansion=expansion, groups=groups)
    return _nonlocal_head(pooling, inner_dim=inner_dim, num_classes=num_classes,
                          hidden_dim=hidden_dim, gating=gating, classifier=classifier,
                          num_experts=num_experts, dropout=dropout)


@register_head("nonlocal_lstm")
def nonlocal_lstm(
    *,
    in_dim: int,
    num_classes: int,
    lstm_size: int = 256,
    num_layers: int = 1,
    inner_dim: int | None = None,
    hidden_dim: int | None = 512,
    gating: bool = True,
    classifier: ClassifierKind = "logistic",
    num_experts: int = 2,
    dropout: float = 0.0,
) -> PooledHead:
    """Non-local block -> LSTM final state -> MLP + context gating -> classifier.

    ``lstm_size`` and ``num_layers`` are those of :class:`~heads.lstm.LSTMPooling`; the other
    arguments are those of :func:`nonlocal_netvlad`.
    """
    pooling = LSTMPooling(in_dim, lstm_size, num_layers=num_layers, dropout=dropout)
    return _nonlocal_head(pooling, inner_dim=inner_dim, num_classes=num_classes,
                          hidden_dim=hidden_dim, gating=gating, classifier=classifier,
                          num_experts=num_experts, dropout=dropout)


@register_head("nonlocal_bilstm")
def nonlocal_bilstm(
    *,
    in_dim: int,
    num_classes: int,
    lstm_size: int = 256,
    num_layers: int = 1,
    inner_dim: int | None = None,
    hidden_dim: int | None = 512,
    gating: bool = True,
    classifier: ClassifierKind = "logistic",
    num_experts: int = 2,
    dropout: float = 0.0,
) -> PooledHead:
    """Non-local block -> BiLSTM final states -> MLP + context gating -> classifier.

    Arguments as :func:`nonlocal_lstm`.
    """
    pooling = LSTMPooling(in_dim, lstm_size, num_layers=num_layers, bidirectional=True,
                          dropout=dropout)
    return _nonlocal_head(pooling, inner_dim=inner_dim, num_classes=num_classes,
                          hidden_dim=hidden_dim, gating=gating, classifier=classifier,
                          num_experts=num_experts, dropout=dropout)
