"""Mixup / between-class learning: two clips mixed frame-wise, labels mixed at the same ratio.

Every example ``i`` of a batch is paired with example ``perm[i]`` and a ratio
``r_i ~ Beta(alpha, alpha)``::

    x_i = r_i * x_i + (1 - r_i) * x_perm[i]      (every frame, channel and pixel; or sample)
    y_i = r_i * y_i + (1 - r_i) * y_perm[i]

(Zhang et al. 2018, mixup; Tokozume et al. 2018, between-class learning). The draws come
from ``numpy.random.default_rng(key)``, keyed by (seed, epoch, step), so a resumed run mixes
exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MixDraw:
    """The ratio and partner of every example of a batch.

    Attributes:
        ratio: (B,) float in [0, 1], the weight of the example itself.
        partner: (B,) int, the index of the example it is mixed with.
    """

    ratio: np.ndarray
    partner: np.ndarray


def draw_mix(batch: int, alpha: float, key: Sequence[int]) -> MixDraw:
    """Ratios ``Beta(alpha, alpha)`` and a random pairing for a batch of ``batch`` examples."""
    if alpha <= 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(list(key))
    ratio = rng.beta(alpha, alpha, size=batch)
    return MixDraw(ratio=ratio, partner=rng.permutation(batch))


def mix_batch(x: torch.Tensor, y: torch.Tensor, draw: MixDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch as in the module docstring.

    Args:
        x: ``(B, ...)`` float inputs (clips ``(B, C, T, H, W)``, waveforms ``(B, W)``).
        y: ``(B, C)`` targets.
        draw: from :func:`draw_mix`.

    Returns:
        The mixed inputs and targets, same shapes and dtypes.
    """
    if len(draw.ratio) != x.shape[0] or y.shape[0] != x.shape[0]:
        raise ValueError(f"a mix draw for {len(draw.ratio)} examples cannot mix a batch of {x.shape[0]}")
    r = torch.as_tensor(draw.ratio, dtype=x.dtype, device=x.device)  # (B,)
    partner = torch.as_tensor(draw.partner, device=x.device)  # (B,)
    rx = r.view(-1, *([1] * (x.ndim - 1)))  # (B,) -> (B, 1, ..., 1)
    ry = r.to(y.dtype).view(-1, 1)  # (B,) -> (B, 1)
    return rx * x + (1 - rx) * x[partner], ry * y + (1 - ry) * y[partner]
