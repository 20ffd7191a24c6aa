"""``mean``: the average of the input probabilities (the baseline every stacker must beat).

It fits nothing. On a row where some inputs are unavailable it averages the available ones
(:meth:`StackInputs.filled` puts their mean in the gaps, which leaves the average unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fusion._settings import SettingsMixin
from fusion.inputs import StackInputs
from fusion.registry import Fuser, register_fusion


@dataclass(frozen=True)
class MeanSettings(SettingsMixin):
    """The mean has no settings."""


@register_fusion("mean")
class MeanFusion(Fuser):
    """Average of the available input probabilities."""

    needs_fit = False
    Settings = MeanSettings

    def fit(self, x: StackInputs, labels: np.ndarray) -> MeanFusion:
        return self

    def predict(self, x: StackInputs) -> np.ndarray:
        return x.filled().mean(axis=1)  # (n, M, C) -> (n, C)

    def contributions(self, x: StackInputs) -> np.ndarray:
        return x.filled() / x.n_models
