r"""Learning rate per step: linear warm-up, then one cosine or cosine cycles, then a constant SWA rate.

::

    lr |  /\__                          cosine: lr -> lr * min_lr_ratio over the steps after warm-up
       | /    \__                       cyclic: the same cosine over every cycle_epochs, restarting at lr
       |/        \___ ___ ___ swa_lr    swa_lr: constant over the last swa_epochs (when set)
       +--warm--+----------+--SWA--+ step

The rate is a pure function of the global step, so a resumed run needs only the step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from extract.training.recipe import TrainRecipe


@dataclass(frozen=True)
class LRSchedule:
    """The rate of every step of a run.

    Attributes:
        lr: peak rate.
        kind: ``cosine`` or ``cyclic``.
        total_steps: steps in the whole run.
        warmup_steps: linear warm-up steps.
        cycle_steps: steps per cycle (``cyclic``).
        min_lr_ratio: the lowest rate as a fraction of ``lr``.
        swa_start: first step of the SWA epochs (``total_steps`` without SWA).
        swa_lr: constant rate from ``swa_start`` on, or None to keep the schedule.
    """

    lr: float
    kind: str
    total_steps: int
    warmup_steps: int
    cycle_steps: int
    min_lr_ratio: float
    swa_start: int
    swa_lr: float | None

    @classmethod
    def from_recipe(cls, recipe: TrainRecipe, steps_per_epoch: int) -> LRSchedule:
        total = recipe.epochs * steps_per_epoch
        swa_start = (recipe.epochs - recipe.swa_epochs) * steps_per_epoch if recipe.swa_epochs else total
        return cls(lr=recipe.lr, kind=recipe.schedule, total_steps=total,
                   warmup_steps=round(recipe.warmup_epochs * steps_per_epoch),
                   cycle_steps=max(1, recipe.cycle_epochs * steps_per_epoch), min_lr_ratio=recipe.min_lr_ratio,
                   swa_start=swa_start, swa_lr=recipe.swa_lr)

    def __call__(self, step: int) -> float:
        """The rate of step ``step`` (0-based)."""
        if self.swa_lr is not None and step >= self.swa_start:
            return self.swa_lr
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        after = step - self.warmup_steps
        if self.kind == "cyclic":
            progress = (after % self.cycle_steps) / self.cycle_steps
        else:
            end = self.swa_start if self.swa_lr is not None else self.total_steps
            progress = min(after / max(end - self.warmup_steps, 1), 1.0)
        low = self.lr * self.min_lr_ratio
        return low + (self.lr - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
