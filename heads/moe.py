"""Video-level classifiers: logistic regression and a Mixture-of-Experts.

The Mixture-of-Experts of the YouTube-8M starter code (Abu-El-Haija et al. 2016), used by
Miech et al. 2017 and Lin et al. 2018: for every class ``c`` a softmax gate over ``m`` experts
plus a dummy expert that always answers 0, and sigmoid experts::

    g_c = softmax(G_c x)            (m + 1 weights)
    p_c = sum_{e < m} g_{c,e} * sigmoid(E_{c,e} x)

The module returns logits ``log p_c - log(1 - p_c)``, computed in log space
(``1 - p_c = sum_{e < m} g_{c,e} sigmoid(-E_{c,e} x) + g_{c,m}``), so that
``sigmoid(logits) == p`` and a BCE-with-logits loss sees exactly the mixture probability.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ClassifierKind = Literal["logistic", "moe"]
CLASSIFIERS: tuple[str, ...] = ("logistic", "moe")


class MixtureOfExperts(nn.Module):
    """Per-class softmax-gated mixture of ``num_experts`` sigmoid experts and a dummy expert."""

    def __init__(self, in_dim: int, num_classes: int, *, num_experts: int = 2) -> None:
        """Create the classifier.

        Args:
            in_dim: size ``F`` of the video descriptor.
            num_classes: number of classes ``C``.
            num_experts: experts per class ``m`` (the dummy expert comes on top).
        """
        super().__init__()
        if in_dim < 1 or num_classes < 1 or num_experts < 1:
            raise ValueError(
                "in_dim, num_classes and num_experts must be >= 1, got "
                f"{in_dim}, {num_classes}, {num_experts}"
            )
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.num_experts = num_experts
        self.gates = nn.Linear(in_dim, num_classes * (num_experts + 1))
        self.experts = nn.Linear(in_dim, num_classes * num_experts)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits ``(B, C)`` of the mixture probabilities for ``x`` ``(B, F)``."""
        b, m = x.shape[0], self.num_experts
        log_gates = F.log_softmax(self.gates(x).view(b, -1, m + 1), dim=-1)  # (B, F) -> (B, C, m+1)
        expert_logits = self.experts(x).view(b, -1, m)  # (B, F) -> (B, C, m)
        log_p = torch.logsumexp(log_gates[..., :m] + F.logsigmoid(expert_logits), dim=-1)
        log_not_p = torch.logsumexp(
            torch.cat([log_gates[..., :m] + F.logsigmoid(-expert_logits), log_gates[..., m:]], -1),
            dim=-1,
        )  # (B, C, m+1) -> (B, C)
        return log_p - log_not_p


def make_classifier(
    kind: ClassifierKind, in_dim: int, num_classes: int, *, num_experts: int = 2
) -> nn.Module:
    """Build the video-level classifier ``(B, F) -> (B, C)`` logits.

    Args:
        kind: ``"logistic"`` (one linear layer) or ``"moe"`` (:class:`MixtureOfExperts`).
        in_dim: size ``F`` of the video descriptor.
        num_classes: number of classes ``C``.
        num_experts: experts per class for ``"moe"``; ignored for ``"logistic"``.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind == "logistic":
        return nn.Linear(in_dim, num_classes)
    if kind == "moe":
        return MixtureOfExperts(in_dim, num_classes, num_experts=num_experts)
    raise ValueError(f"unknown classifier {kind!r}; choose one of {', '.join(CLASSIFIERS)}")
