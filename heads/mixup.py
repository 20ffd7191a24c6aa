"""Mixup / between-class learning: examples mixed with a permutation of their batch, labels at the same ratio.

Every example ``i`` of a batch is paired with example ``perm[i]`` and a ratio ``r_i``::

    x_i = r_i * x_i + (1 - r_i) * x_perm[i]      (every clip feature; or every frame, channel, pixel)
    y_i = r_i * y_i + (1 - r_i) * y_perm[i]

(Zhang et al. 2018, *mixup*; Tokozume et al. 2018, *between-class learning*). The ratio is
drawn from ``Beta(alpha, alpha)`` once per example (``per_example=True``, the backbone
trainer) or once for the whole batch (``per_example=False``, the heads trainer: one
``lambda`` per batch as in the original mixup). The draws come from a numpy generator the
caller keys by (seed, epoch, ...) (:func:`heads.seeding.keyed_rng`), so a resumed run mixes
exactly as an uninterrupted one.

Clip features with a mask ``(B, K)``: padded clips are zeroed first and a slot is valid in
the mix when it is valid in either video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MixDraw:
    """The ratio and partner of every example of a batch.

    Attributes:
        ratio: (B,) float64 in [0, 1], the weight of the example itself.
        partner: (B,) int, the index of the example it is mixed with.
    """

    ratio: np.ndarray
    partner: np.ndarray


def draw_mix(batch: int, alpha: float, rng: np.random.Generator, *, per_example: bool = True) -> MixDraw:
    """Ratios ``Beta(alpha, alpha)`` (one per example, or one shared) and a random pairing.

    Args:
        batch: examples in the batch.
        alpha: the Beta distribution's two parameters (> 0).
        rng: the generator to draw from: first the ratio(s), then the permutation.
        per_example: one ratio per example (True) or one for the whole batch (False).
    """
    if not alpha > 0:
        raise ValueError(f"mixup alpha must be > 0, got {alpha}")
    ratio = rng.beta(alpha, alpha, size=batch if per_example else 1)
    return MixDraw(ratio=np.resize(ratio, batch), partner=rng.permutation(batch))


def mix_batch(x: torch.Tensor, y: torch.Tensor, draw: MixDraw,
              mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Mix a batch as in the module docstring.

    Args:
        x: ``(B, ...)`` float inputs (clip features ``(B, K, D)``, clips ``(B, C, T, H, W)``,
            waveforms ``(B, W)``).
        y: ``(B, C)`` targets.
        draw: from :func:`draw_mix`.
        mask: ``(B, K)`` bool valid clips of clip features, or None.

    Returns:
        The mixed inputs, targets and mask (None without one), same shapes and dtypes.
    """
    assert len(draw.ratio) == x.shape[0] == y.shape[0], (len(draw.ratio), x.shape, y.shape)
    partner = torch.as_tensor(draw.partner, device=x.device)  # (B,)
    ones = (1,) * (x.ndim - 1)
    r = torch.as_tensor(draw.ratio, dtype=x.dtype, device=x.device).view(-1, *ones)  # (B,) -> (B, 1, ..., 1)
    rest = torch.as_tensor(1.0 - draw.ratio, dtype=x.dtype, device=x.device).view(-1, *ones)
    if mask is not None:
        x = torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))  # (B, K, D)
        mask = mask | mask[partner]
    ry = torch.as_tensor(draw.ratio, dtype=y.dtype, device=y.device).view(-1, 1)  # (B,) -> (B, 1)
    ry_rest = torch.as_tensor(1.0 - draw.ratio, dtype=y.dtype, device=y.device).view(-1, 1)
    return r * x + rest * x[partner], ry * y + ry_rest * y[partner], mask
