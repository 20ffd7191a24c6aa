r"""Learning rate per optimiser step: linear warm-up, then cosine / cosine cycles / constant, then SWA.

::

    lr |  /\__                          cosine: lr -> lr * min_lr_ratio over the steps after warm-up
       | /    \__                       cyclic: the same cosine over every cycle_steps, restarting at lr
       |/        \___ ___ ___ swa_lr    constant: lr after warm-up
       +--warm--+----------+--SWA--+    swa_lr: constant from swa_start on (when set)

The rate is a pure function of the global step, so a resumed run needs only the step count.
Both trainers use it: ``heads`` through ``LambdaLR(opt, schedule.factor)``, the backbone
trainer by setting ``schedule(step)`` on its parameter groups.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("cosine", "cyclic", "constant")


@dataclass(frozen=True)
class LRSchedule:
    """The rate of every step of a run.

    Attributes:
        lr: peak rate.
        total_steps: steps in the whole run.
        warmup_steps: linear warm-up steps (step ``s`` < ``warmup_steps`` runs at
            ``lr * (s + 1) / warmup_steps``).
        kind: ``cosine``, ``cyclic`` or ``constant``.
        cycle_steps: steps per cycle (``cyclic``).
        min_lr_ratio: the lowest rate of a cosine as a fraction of ``lr``.
        swa_start: first step of the SWA phase (None: no SWA phase).
        swa_lr: constant rate from ``swa_start`` on, or None to keep the schedule.
    """

    lr: float
    total_steps: int
    warmup_steps: int = 0
    kind: str = "cosine"
    cycle_steps: int = 1
    min_lr_ratio: float = 0.0
    swa_start: int | None = None
    swa_lr: float | None = None

    def __post_init__(self) -> None:
        assert self.kind in KINDS, self.kind  # the settings objects check the user's choice
        assert self.cycle_steps >= 1 and self.warmup_steps >= 0 and self.lr > 0

    def _in_swa(self, step: int) -> bool:
        return self.swa_lr is not None and self.swa_start is not None and step >= self.swa_start

    def factor(self, step: int) -> float:
        """The rate of step ``step`` (0-based) as a multiple of ``lr`` (for ``LambdaLR``)."""
        if self._in_swa(step):
            return self.swa_lr / self.lr
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps  # linear warm-up
        if self.kind == "constant":
            return 1.0
        after = step - self.warmup_steps
        if self.kind == "cyclic":
            progress = (after % self.cycle_steps) / self.cycle_steps
        else:
            end = self.swa_start if self.swa_lr is not None and self.swa_start is not None else self.total_steps
            progress = min(after / max(end - self.warmup_steps, 1), 1.0)
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def __call__(self, step: int) -> float:
        """The rate of step ``step`` (0-based)."""
        if self._in_swa(step):
            return self.swa_lr
        return self.lr * self.factor(step)
