"""Fine-tune only the last k stages of a backbone (the Stanford MiT report's "last block").

``Backbone.stages()`` lists stem, layer1..layer4 and the classifier. Freezing the others
turns off their gradients and keeps their BatchNorm layers in eval mode (running
statistics of the initial weights, not of the new batches), also while the rest trains.
"""

from __future__ import annotations

from torch import nn

from extract.backbones import Backbone


def freeze_all_but_last(model: Backbone, k: int) -> list[str]:
    """Freeze every parameter except those of the last ``k`` stages (``k = 0``: freeze nothing).

    Returns:
        Names of the norm layers that must stay in eval mode (for :func:`set_train_mode`; names,
        so they also pick the layers of a copy such as the SWA average).
    """
    stages = model.stages()
    if k < 0 or k > len(stages):
        raise ValueError(f"train_stages must be 0..{len(stages)} for {model.info.name} "
                         f"({len(stages)} stages including the classifier), got {k}")
    if k == 0:
        return []
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = {id(m) for stage in stages[-k:] for m in stage.modules()}
    for stage in stages[-k:]:
        for p in stage.parameters():
            p.requires_grad_(True)
    return [name for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and id(m) not in trainable]


def set_train_mode(model: nn.Module, frozen_norms: list[str]) -> None:
    """``model.train()`` with the named frozen norm layers kept in eval mode."""
    model.train()
    for name in frozen_norms:
        model.get_submodule(name).eval()
