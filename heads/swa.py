"""Weight averaging (SWA, EMA) and a batch-norm update for the averaged model, for both trainers.

- SWA (Izmailov et al. 2018, *Averaging Weights Leads to Wider Optima and Better
  Generalization*): the equal-weight average of the weights at chosen points (the end of
  each epoch from ``swa_start`` on): ``avg += (w - avg) / (n + 1)``.
- EMA: ``w_avg <- d w_avg + (1 - d) w`` after every optimiser step from ``swa_start`` on.

Only parameters are averaged. The batch-norm running statistics of an averaged model belong
to none of the averaged weights, so :func:`update_bn` recomputes them with one pass over
training batches. ``torch.optim.swa_utils.update_bn`` calls ``model(x)`` and so cannot pass
the heads' clip mask; here each batch is a tuple of the model's arguments (``(features,
mask)`` for a head, ``(clips,)`` for a backbone), so the heads'
:class:`~heads._masking.MaskedBatchNorm1d` layers see only valid clips, and both those and
``nn.BatchNorm*`` layers get the cumulative (equal-weight) average of the batch statistics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from heads._masking import MaskedBatchNorm1d

log = logging.getLogger(__name__)

AVERAGING = ("none", "swa", "ema")
_BN_TYPES = (nn.modules.batchnorm._BatchNorm, MaskedBatchNorm1d)


def make_averager(model: nn.Module, mode: str = "swa", *, ema_decay: float = 0.999) -> AveragedModel:
    """An ``AveragedModel`` of ``model``: equal weights (``"swa"``) or exponential (``"ema"``).

    Call ``averager.update_parameters(model)`` to add the current weights (the first call
    copies them); ``averager.module`` is the averaged network, ``averager.n_averaged`` the
    number of snapshots so far.
    """
    if mode not in ("swa", "ema"):
        raise ValueError(f"weight averaging must be 'swa' or 'ema', got {mode!r}")
    if not 0.0 < ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
    fn = get_ema_multi_avg_fn(ema_decay) if mode == "ema" else None
    return AveragedModel(model, multi_avg_fn=fn, use_buffers=False)


def batch_norm_layers(model: nn.Module, frozen_norms: Sequence[str] = ()) -> list[nn.Module]:
    """The batch-norm layers of ``model`` that track running statistics, but those named in ``frozen_norms``."""
    frozen = {id(model.get_submodule(n)) for n in frozen_norms}
    return [m for m in model.modules()
            if isinstance(m, _BN_TYPES) and getattr(m, "track_running_stats", True) and id(m) not in frozen]


@torch.no_grad()
def update_bn(model: nn.Module, batches: Iterable[tuple[Tensor, ...] | Tensor], *,
              frozen_norms: Sequence[str] = ()) -> int:
    """Recompute every batch-norm running statistic of ``model`` from ``batches``.

    Running means and variances are reset, then each batch is run through ``model(*batch)``
    (a bare tensor: ``model(batch)``) in training mode, the layers in ``frozen_norms`` in
    evaluation mode and untouched, with the momentum of batch ``i`` (0-based) set to
    ``1 / (i + 1)``: the running statistics end as the equal-weight mean of the per-batch
    statistics, as with ``momentum=None`` in torch.

    Args:
        model: the model; its layers are updated in place.
        batches: the model's inputs, on its device.
        frozen_norms: names of norm layers to leave as they are (frozen stages).

    Returns:
        The number of batches used (0 when the model has no batch norm to update: nothing to do).
    """
    layers = batch_norm_layers(model, frozen_norms)
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
        m.num_batches_tracked.zero_()
    was_training = model.training
    model.train()
    for name in frozen_norms:
        model.get_submodule(name).eval()
    n = 0
    try:
        for batch in batches:
            for m in layers:
                m.momentum = 1.0 / (n + 1)
            model(*batch) if isinstance(batch, tuple) else model(batch)
            n += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    if n == 0:
        log.warning("update_bn got no batch: the running statistics are reset to mean 0, variance 1")
    return n
