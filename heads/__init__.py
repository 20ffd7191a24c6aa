"""Heads on cached clip features: pooling heads, multi-label losses and metrics.

Public API::

    get_head, list_heads, register_head      heads.registry (NetVLAD, NeXtVLAD, non-local gating, ...)
    get_loss, list_losses, register_loss     heads.losses (BCE, scaled BCE, focal, LSEP, WARP, ...)
    evaluate, class_map, sample_map, gap     heads.metrics
    TrainConfig, train_head, FeatureCache    heads.trainer (python -m heads.train)

See heads/README.md for the equations and references.
"""

from heads.losses import class_weights, get_loss, list_losses, register_loss
from heads.metrics import class_map, evaluate, gap, per_class_ap_table, sample_map
from heads.registry import get_head, list_heads, register_head
from heads.trainer import FeatureCache, TrainConfig, TrainResult, train_head

__all__ = [
    "FeatureCache", "TrainConfig", "TrainResult", "train_head", "class_map", "class_weights", "evaluate", "gap", "get_head", "get_loss", "list_heads", "list_losses",
    "per_class_ap_table", "register_head", "register_loss", "sample_map",
]
