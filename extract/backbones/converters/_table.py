"""Explicit key tables: build them, apply them, refuse files that do not fit.

A converter is a dict ``their key -> our key``, written out by loops over the stages and
blocks of the one architecture it converts. :func:`apply_table` renames every tensor of a
state dict through it and refuses (:class:`~extract.backbones.weights.WeightsError`, one
line listing a few keys) a state dict with a tensor the table does not name or without a
tensor the table needs. BatchNorm ``num_batches_tracked`` counters may be absent (files
converted from Caffe2, or saved by old PyTorch): they carry no weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from extract.backbones.weights import WeightsError

__all__ = ["apply_table", "batch_norm", "unwrap"]

_BN_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_OPTIONAL = "num_batches_tracked"
_MODULE_PREFIX = "module."  # nn.DataParallel / DistributedDataParallel
#: Where checkpoints keep their state dict: PySlowFast / pytorchvideo, TSM, extract.train.
_STATE_KEYS = ("model_state", "state_dict", "model")
_SHOW = 5


def batch_norm(theirs: str, ours: str) -> dict[str, str]:
    """Table rows of a BatchNorm: ``theirs.weight -> ours.weight``, ... (five tensors)."""
    return {f"{theirs}.{t}": f"{ours}.{t}" for t in _BN_TENSORS}


def unwrap(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict inside a loaded checkpoint, with a ``module.`` key prefix removed.

    Accepts a state dict itself or a dict holding it under ``model_state`` (PySlowFast,
    pytorchvideo), ``state_dict`` (TSM) or ``model``.
    """
    for key in _STATE_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    return {k.removeprefix(_MODULE_PREFIX): v for k, v in checkpoint.items()}


def _listed(label: str, keys: list[str]) -> str:
    more = ", ..." if len(keys) > _SHOW else ""
    return f"{label} ({len(keys)}): {', '.join(keys[:_SHOW])}{more}"


def apply_table(state: Mapping[str, Tensor], table: Mapping[str, str], source: str) -> dict[str, Tensor]:
    """Rename every tensor of ``state`` through ``table`` (their key -> our key).

    Args:
        state: the source state dict (after :func:`unwrap`).
        table: every tensor the source layout has, mapped to our key.
        source: the layout's name, for the error message (``"pytorchvideo SlowFast R50"``).

    Returns:
        The state dict in our layout.

    Raises:
        WeightsError: a tensor the table needs is missing, the state dict has one the
            table does not name, or a value is not a tensor (a few of each are listed).
    """
    missing = [k for k in table if k not in state and not k.endswith(_OPTIONAL)]
    unexpected = [k for k in state if k not in table]
    not_tensors = [k for k in state if k in table and not isinstance(state[k], Tensor)]
    if missing or unexpected or not_tensors:
        problems = [_listed(label, keys) for label, keys in (
            ("missing", missing), ("unexpected", unexpected), ("not tensors", not_tensors)) if keys]
        raise WeightsError(f"not a {source} state dict: {'; '.join(problems)}")
    return {table[k]: v for k, v in state.items()}
