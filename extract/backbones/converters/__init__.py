"""Converters for the public checkpoints of other code bases, from their key layouts to ours.

One module per source family, each with ``convert(state_dict) -> state_dict`` (an explicit
key table; a file with a missing or a left-over tensor is refused with one
:class:`~extract.backbones.weights.WeightsError` line), ``TABLES`` (backbone -> its table,
their key -> ours) and ``URLS`` (backbone -> the public file):

============================  =========================================  =====================================
converter                     source                                     backbone(s)
============================  =========================================  =====================================
``pytorchvideo``              pytorchvideo model zoo, Kinetics-400        ``slowfast_8x8_r50``, ``i3d_8x8_r50``
``pyslowfast``                PySlowFast I3D NLN R50 8x8 (PyTorch keys)   ``i3d_nln_8x8_r50``
``tsm``                       TSM authors' Kinetics-400 ResNet-50          ``tsm_resnet50``
``torchvggish``               torchvggish's AudioSet VGGish                ``vggish_relu``
============================  =========================================  =====================================

:func:`get_converter` gives a converter by name (what a named weight records);
:func:`converter_for` is what ``get_backbone(name, weights=PATH)`` applies to a local
file: the converter of that backbone when the file has a key of the source layout, so
``--backbone rgb:slowfast_8x8_r50@SLOWFAST_8x8_R50.pyth`` loads the downloaded file as is
(a file already in our layout, e.g. from ``extract.train``, passes unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

from torch import Tensor

from extract.backbones.converters import pyslowfast, pytorchvideo, torchvggish, tsm
from extract.backbones.weights import WeightsError

__all__ = ["CONVERTERS", "Convert", "converter_for", "get_converter", "list_converters"]

Convert = Callable[[Mapping[str, Any]], dict[str, Tensor]]
_MODULES: dict[str, ModuleType] = {
    "pytorchvideo": pytorchvideo,
    "pyslowfast": pyslowfast,
    "tsm": tsm,
    "torchvggish": torchvggish,
}
#: Converter name -> ``convert`` function.
CONVERTERS: dict[str, Convert] = {name: module.convert for name, module in _MODULES.items()}


def list_converters() -> list[str]:
    """Names of the converters, sorted."""
    return sorted(CONVERTERS)


def get_converter(name: str) -> Convert:
    """The ``convert`` function of converter ``name``.

    Raises:
        WeightsError: unknown name (the known ones are listed).
    """
    if name not in CONVERTERS:
        raise WeightsError(f"unknown checkpoint converter {name!r}; available: {', '.join(list_converters())}")
    return CONVERTERS[name]


def converter_for(backbone: str) -> Convert | None:
    """What to apply to a local checkpoint for ``backbone``; None when no converter fills it.

    The returned function converts a state dict that has a key of the backbone's source
    layout which is not also one of ours (torchvggish's names are ours: its files load as
    they are) and returns any other state dict unchanged, for ``load_weights`` to check.
    """
    for name, module in _MODULES.items():
        table = module.TABLES.get(backbone)
        if table is not None:
            convert, ours = CONVERTERS[name], frozenset(table.values())

            def maybe_convert(state: Mapping[str, Any]) -> dict[str, Tensor]:
                foreign = any(k in table and k not in ours for k in state)
                return convert(state) if foreign else dict(state)

            return maybe_convert
    return None
