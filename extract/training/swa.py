"""Stochastic weight averaging (Izmailov et al. 2018) over the last epochs, then fresh BN statistics.

The weights at the end of each of the last ``swa_epochs`` epochs are averaged with equal
weight (``torch.optim.swa_utils.AveragedModel``: ``avg += (w - avg) / (n + 1)``). The
BatchNorm running statistics of an average of weights are not the average of their
statistics, so :func:`update_bn` recomputes them with one pass over training batches:
running stats reset, ``momentum=None`` (a cumulative mean over the batches), train mode,
no gradients. It takes ready model inputs (the loaders yield uint8 clips that become
inputs on the device), and leaves frozen stages' BatchNorm layers untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from extract.backbones import Backbone


class WeightAverage:
    """The running equal-weight average of a model's parameters.

    Args:
        model: the model being trained; a copy is made at construction (its weights are
            replaced by the first :meth:`update`).
    """

    def __init__(self, model: Backbone) -> None:
        self.averaged = AveragedModel(model)

    def update(self, model: Backbone) -> None:
        """Add the model's current parameters to the average."""
        self.averaged.update_parameters(model)

    @property
    def count(self) -> int:
        """Snapshots averaged so far."""
        return int(self.averaged.n_averaged)

    @property
    def model(self) -> Backbone:
        """The averaged backbone (a module of its own)."""
        return self.averaged.module

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state)


def update_bn(model: nn.Module, inputs: Iterable[Tensor], frozen_norms: Sequence[str] = ()) -> int:
    """Recompute the BatchNorm running statistics of ``model`` from batches of model inputs.

    Args:
        model: the model (its BatchNorm layers are updated in place).
        inputs: ``(B, ...)`` ready model inputs, on the model's device.
        frozen_norms: names of norm layers to leave as they are.

    Returns:
        The number of batches seen (0 leaves the statistics reset: pass some batches).
    """
    frozen = {id(model.get_submodule(n)) for n in frozen_norms}
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and id(m) not in frozen]
    if not norms:
        return 0
    momenta = {m: m.momentum for m in norms}
    was_training = model.training
    model.train()
    for name in frozen_norms:
        model.get_submodule(name).eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches
    n = 0
    with torch.no_grad():
        for x in inputs:
            model(x)
            n += 1
    for m, momentum in momenta.items():
        m.momentum = momentum
    model.train(was_training)
    return n
