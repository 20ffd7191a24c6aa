"""Heads on cached clip features: pooling heads, multi-label losses and metrics.

Public API::

    get_head, list_heads, register_head      heads.registry (NetVLAD, NeXtVLAD, non-local gating, ...)
    get_loss, list_losses, register_loss     heads.losses (BCE, scaled BCE, focal, LSEP, WARP, ...)
    evaluate, class_map, sample_map, gap     heads.metrics
    TrainConfig, train_head, FeatureCache    heads.trainer (python -m heads.train)
    run_sweep                                heads.sweep (python -m heads.sweep, on Dask)
    load_grid, expand_grid                   a sweep's grid file -> validated TrainConfigs
    MemorySource, StreamSource               the trainer's feature sources (in memory / streamed)

See heads/README.md for the equations and references.
"""

import importlib
from typing import Any

# Lazy exports (PEP 562): `import heads.metrics` (fusion's only need) must not pay for torch.
_EXPORTS = {
    "class_weights": "heads.losses", "get_loss": "heads.losses", "list_losses": "heads.losses",
    "register_loss": "heads.losses", "class_map": "heads.metrics", "evaluate": "heads.metrics",
    "gap": "heads.metrics", "per_class_ap_table": "heads.metrics", "sample_map": "heads.metrics",
    "get_head": "heads.registry", "list_heads": "heads.registry", "register_head": "heads.registry",
    "FeatureCache": "heads.trainer", "TrainConfig": "heads.trainer", "TrainResult": "heads.trainer",
    "train_head": "heads.trainer", "run_sweep": "heads.sweep",
    "expand_grid": "heads._grid", "load_grid": "heads._grid",
    "MemorySource": "heads._train_data", "StreamSource": "heads._train_data",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'heads' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
