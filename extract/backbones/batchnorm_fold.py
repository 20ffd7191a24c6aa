"""Folding eval-mode BatchNorm into the convolution before it, for inference (feature extraction).

In eval mode a BatchNorm is an affine map per channel, ``y = (x - mean) / sqrt(var + eps) * g + b``,
so a convolution followed by it is one convolution with scaled weights and a bias
(``torch.nn.utils.fusion.fuse_conv_bn_eval``). Folding drops a full read and write of every
activation the BatchNorm sees, and the tensor it allocates: R(2+1)D-18 (37 BatchNorms) spends
7-15% less CPU per clip on the 2-core machines and peaks ~20 MB lower per clip in a batch
(``extract/README.md``, issue 17). The features are
those of the unfolded model up to float32 rounding.

Folded are the pairs a forward pass runs one after the other by construction: consecutive
children of an ``nn.Sequential`` (``Conv, BN``), where the convolution may also be the last
module of a nested ``nn.Sequential`` before the BatchNorm (torchvision's ``Conv2Plus1D``,
``BasicBlock.conv2`` of the video ResNets). A pair wired in ``forward`` code (``self.conv1`` then
``self.bn1`` in torchvision's image ResNets) is left as it is: only the code says it is a pair.
Only modules that compute as ``nn.ConvNd`` and ``nn.BatchNormNd`` do are folded: those classes
and subclasses that keep their ``forward`` (torchvision's ``Conv3DSimple``); a subclass with its
own (timm's weight-standardised ``StdConv2d`` would undo the scaled weights) is left alone.

::

    Sequential(Conv3d, BatchNorm3d, ReLU)          -> Sequential(Conv3d', Identity, ReLU)
    Sequential(Sequential(.., Conv3d), BatchNorm3d) -> Sequential(Sequential(.., Conv3d'), Identity)
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batchnorm"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _plain(module: nn.Module, bases: tuple[type[nn.Module], ...]) -> bool:
    """``module`` is one of ``bases`` and computes as it does (no ``forward`` of its own)."""
    kind = type(module)
    return any(issubclass(kind, b) and kind.forward is b.forward
               and getattr(kind, "_conv_forward", None) is getattr(b, "_conv_forward", None) for b in bases)


def _last_conv(module: nn.Module) -> tuple[nn.Module, str] | None:
    """``(parent, name)`` of the convolution whose output ``module``'s output is, if any."""
    while isinstance(module, nn.Sequential) and len(module):
        name = list(module._modules)[-1]
        child = module._modules[name]
        if _plain(child, _CONVS):
            return module, name
        module = child
    return None


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        _plain(conv, _CONVS) and _plain(bn, _NORMS) and not conv.training and not bn.training
        and bn.running_mean is not None and bn.running_var is not None  # eval uses running statistics
        and bn.num_features == conv.out_channels
    )


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every eval-mode BatchNorm that directly follows a convolution in a ``Sequential``
    into that convolution, in place (the BatchNorm becomes ``nn.Identity``).

    Only for inference: the model must be in eval mode (modules in training mode are left
    alone; a folded model cannot be trained as the original would be).

    Returns:
        How many BatchNorms were folded.
    """
    folded = 0
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            first, bn = seq._modules[a], seq._modules[b]
            where = (seq, a) if _plain(first, _CONVS) else _last_conv(first)
            if where is None:
                continue
            parent, name = where
            conv = parent._modules[name]
            if not _foldable(conv, bn):
                continue
            parent._modules[name] = fuse_conv_bn_eval(conv, bn)
            seq._modules[b] = nn.Identity()
            folded += 1
    return folded
