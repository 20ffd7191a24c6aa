"""Training augmentation of clips: random short-side resize, random crop, random flip.

One draw per training example, shared by all its frames (the clip moves as a whole)::

    short = aug.draw_short_side(rng)             # decode_video(..., size=short): the decoder scales
    clip = aug.crop_flip_rgb(frames, rng)        # (T, H, W, 3) -> (T, crop, crop, 3) uint8
    flow = aug.crop_flip_flow(stack, rng)        # (2, T, H, W) -> (2, T, crop, crop), x negated if flipped

Evaluation never augments: it takes ``extract.run``'s centre crop at ``short_side``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipAugment:
    """Random short side in ``short_side * scale``, uniform crop position, flip with p = 0.5.

    Attributes:
        short_side: the evaluation short side in pixels.
        scale: (low, high) multipliers of ``short_side``; the result is at least ``crop``.
        crop: square crop side in pixels.
        flip: mirror left-right with probability 0.5.
    """

    short_side: int
    scale: tuple[float, float]
    crop: int
    flip: bool

    def __post_init__(self) -> None:
        if self.crop < 1 or self.short_side < 1:
            raise ValueError(f"crop and short_side must be >= 1, got {self.crop}, {self.short_side}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")

    def draw_short_side(self, rng: np.random.Generator) -> int:
        """Short side to decode at: ``round(short_side * U(scale))``, at least ``crop``."""
        return max(self.crop, round(self.short_side * rng.uniform(*self.scale)))

    def _box(self, h: int, w: int, rng: np.random.Generator) -> tuple[int, int, bool]:
        if min(h, w) < self.crop:
            raise ValueError(f"crop {self.crop} does not fit frames of {h}x{w}")
        top = int(rng.integers(0, h - self.crop + 1))
        left = int(rng.integers(0, w - self.crop + 1))
        coin = rng.random()  # drawn even without flips: the same draws place the same crop
        flip = bool(self.flip and coin < 0.5)
        return top, left, flip

    def crop_flip_rgb(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One random crop (and maybe flip) of a clip: (..., H, W, C) -> (..., crop, crop, C)."""
        top, left, flip = self._box(frames.shape[-3], frames.shape[-2], rng)
        out = frames[..., top : top + self.crop, left : left + self.crop, :]  # (..., crop, crop, C)
        if flip:
            out = out[..., :, ::-1, :]  # mirror W
        return np.ascontiguousarray(out)

    def crop_flip_flow(self, stack: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The same for channel-first flow (2, ..., H, W): a mirrored field's x changes sign."""
        top, left, flip = self._box(stack.shape[-2], stack.shape[-1], rng)
        out = stack[..., top : top + self.crop, left : left + self.crop]  # (2, ..., crop, crop)
        if flip:
            out = out[..., ::-1].copy()  # mirror W
            out[0] *= -1.0  # channel 0 is x (rightwards)
        return np.ascontiguousarray(out)
