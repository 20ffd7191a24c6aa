"""Exact masking helpers shared by the pooling heads.

Every head takes clip features ``x`` of shape ``(B, K, D)`` and a boolean ``mask`` of shape
``(B, K)`` (True = a real clip, False = padding). Padding must take no part in anything:
:func:`prepare_clips` replaces padded clips by zeros (so that NaN or huge garbage cannot leak
through ``0 * garbage``), and :class:`MaskedBatchNorm1d` computes its batch statistics over the
valid positions only.
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def prepare_clips(x: Tensor, mask: Tensor | None, *, in_dim: int) -> tuple[Tensor, Tensor]:
    """Check the inputs of a head and zero its padded clips.

    Args:
        x: clip features ``(B, K, D)``, floating point.
        mask: ``(B, K)`` bool, True where the clip is valid; ``None`` means every clip is valid.
        in_dim: the feature size ``D`` the head was built for.

    Returns:
        ``(x, mask)``: ``x`` with every padded clip replaced by zeros and a bool mask.

    Raises:
        ValueError: when the shapes or dtypes do not fit; the message says what was expected.
    """
    if x.dim() != 3:
        raise ValueError(
            f"a head expects clip features of shape (B, K, D), got shape {tuple(x.shape)}; "
            "add a clip axis with x.unsqueeze(1) for one feature vector per video"
        )
    if not x.is_floating_point():
        raise ValueError(f"clip features must be floating point, got {x.dtype}; use x.float()")
    if x.shape[-1] != in_dim:
        raise ValueError(
            f"this head was built for in_dim={in_dim} but the features have D={x.shape[-1]}; "
            "build the head with get_head(..., in_dim=D) for this feature set"
        )
    if mask is None:
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(
            f"mask must have shape (B, K) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor (True = valid clip), got {mask.dtype}")
    x = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x, mask


class MaskedBatchNorm1d(nn.Module):
    """Batch normalisation over the last axis whose statistics use valid positions only.

    In training the mean and (biased) variance are taken over the positions where ``mask`` is
    True, exactly as ``nn.BatchNorm1d`` applied to those rows alone, and the running statistics
    are updated with the unbiased variance and ``momentum``. In evaluation the running
    statistics are used. Padded positions of the output are zero. The parameter and buffer names
    match ``nn.BatchNorm1d`` so state dicts are interchangeable.

    A batch without any valid position leaves the running statistics untouched; a batch with
    a single valid position updates the running variance with the biased variance (zero), where
    ``nn.BatchNorm1d`` would refuse the batch.
    """

    def __init__(
        self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True
    ) -> None:
        """Create the layer.

        Args:
            num_features: size of the normalised (last) axis.
            eps: added to the variance before the square root.
            momentum: weight of the new batch in the running statistics, in (0, 1].
            affine: learn a scale (``weight``) and shift (``bias``).
        """
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Normalise ``x`` of shape ``(..., F)``; ``mask`` has shape ``x.shape[:-1]``."""
        if x.shape[-1] != self.num_features:
            raise ValueError(f"expected last axis {self.num_features}, got shape {tuple(x.shape)}")
        if mask is None:
            mask = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
        # statistics in float32 (or wider): half precision cannot even count 70k clips
        stat_dtype = torch.promote_types(x.dtype, torch.float32)
        flat = x.reshape(-1, self.num_features).to(stat_dtype)  # (..., F) -> (N, F)
        valid = mask.reshape(-1, 1)  # (...) -> (N, 1)
        zero = torch.zeros((), dtype=stat_dtype, device=x.device)
        if self.training:
            n = valid.sum().to(stat_dtype)
            n_safe = n.clamp(min=1.0)
            mean = torch.where(valid, flat, zero).sum(0) / n_safe
            var = torch.where(valid, (flat - mean) ** 2, zero).sum(0) / n_safe
            with torch.no_grad():
                unbiased = var * n / (n - 1.0).clamp(min=1.0)
                m = self.momentum
                has_rows = n > 0
                new_mean = (1 - m) * self.running_mean + m * mean
                new_var = (1 - m) * self.running_var + m * unbiased
                self.running_mean.copy_(torch.where(has_rows, new_mean, self.running_mean))
                self.running_var.copy_(torch.where(has_rows, new_var, self.running_var))
                self.num_batches_tracked.add_(1)
        else:
            mean, var = self.running_mean, self.running_var
        out = (flat - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight + self.bias
        out = torch.where(valid, out, zero).to(x.dtype)
        return out.reshape(x.shape)  # (N, F) -> (..., F)
