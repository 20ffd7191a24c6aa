"""Seeds derived from a run's seed and words, so every random stream is keyed and resumable.

A stream is named by its parts, e.g. ``(seed, fold, epoch, "mixup")`` or ``(seed, epoch, step)``:
the same parts give the same stream on every machine and in every process, whatever ran
before, so a run resumed after epoch ``e`` draws in epoch ``e + 1`` what an uninterrupted run
drew.
"""

from __future__ import annotations

import numpy as np


def seed_words(*parts: int | str) -> list[int]:
    """The parts as non-negative ints (a word becomes the int of its UTF-8 bytes)."""
    return [p if isinstance(p, int) else int.from_bytes(p.encode(), "little") for p in parts]


def keyed_rng(*parts: int | str) -> np.random.Generator:
    """A numpy generator keyed by ``parts`` (``default_rng([seed, epoch, i])`` for ints)."""
    return np.random.default_rng(seed_words(*parts))


def derive_seed(*parts: int | str) -> int:
    """A 31-bit seed from ``parts`` (for ``torch.manual_seed``), stable across runs and machines."""
    return int(np.random.SeedSequence(seed_words(*parts)).generate_state(1)[0] & 0x7FFFFFFF)
