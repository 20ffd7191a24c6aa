"""Checkpoint files: loading (``weights_only=True``), checksums and cross-modality init.

This module reads files on disk; named weights and their downloads are
:mod:`extract.backbones.pretrained`. A checkpoint is a file holding a state_dict in
torchvision's layout (``conv1.weight``, ``layer1.0.bn1.running_mean``, ..., ``fc.weight``),
or a training checkpoint dict with that state_dict under ``"model"``, ``"state_dict"`` or
``"model_state"`` (PySlowFast, pytorchvideo).

Cross-modality init (TSN, Wang et al. 2016): a net for C input channels (a flow stack)
starts from an RGB net by averaging the first conv's kernel over its 3 input channels and
repeating the average C times. For any input ``x`` with C channels the new conv gives
exactly what the RGB conv gives on the 3-channel image whose every channel is
``sum_j x_j / 3``; a constant input ``v`` thus answers like the RGB net on the constant
``v * C / 3``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from extract.errors import ExtractError

logger = logging.getLogger(__name__)

__all__ = ["WeightsError", "adapt_first_conv", "file_sha256", "load_weights", "read_torch_file"]

#: Keys of the classifier, which may be absent or differently shaped (other class counts).
CLASSIFIER_PREFIX = "fc."
_MODULE_PREFIX = "module."  # added by nn.DataParallel / DistributedDataParallel
_SHOW = 5  # how many offending keys an error lists
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class WeightsError(ExtractError, ValueError):
    """A checkpoint file cannot be read, or does not fit the model it is loaded into.

    An :class:`~extract.errors.ExtractError`, so commands report it on one line.
    """


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_conv(module: nn.Module, name: str | None = None) -> tuple[str, nn.Conv1d | nn.Conv2d | nn.Conv3d]:
    """Name and module of the convolution ``name``, or of the first one in registration order."""
    if name is not None:
        conv = module.get_submodule(name)
        if not isinstance(conv, _CONVS):
            raise ValueError(f"{name} is a {type(conv).__name__}, not a convolution")
        return name, conv
    for name, child in module.named_modules():
        if isinstance(child, _CONVS):
            return name, child
    raise ValueError(f"{type(module).__name__} has no convolution to adapt")


def _average_kernel(weight: Tensor, in_channels: int) -> Tensor:
    """Average a kernel over its input channels and repeat it ``in_channels`` times."""
    mean = weight.mean(dim=1, keepdim=True)  # (O, 3, *k) -> (O, 1, *k)
    return mean.expand(-1, in_channels, *weight.shape[2:]).clone()  # (O, 1, *k) -> (O, C, *k)


def adapt_first_conv(module: nn.Module, in_channels: int, name: str | None = None) -> nn.Module:
    """Replace the first convolution of ``module`` by one taking ``in_channels`` inputs.

    The new kernel is the old one averaged over its input channels and repeated
    (cross-modality init, see the module docstring); stride, padding and bias are kept.

    Args:
        module: a model containing the convolution (not the convolution itself).
        in_channels: the new number of input channels.
        name: the input convolution's name inside ``module`` (e.g. timm's
            ``pretrained_cfg["first_conv"]``); None takes the first convolution registered.

    Returns:
        The new convolution, already in place inside ``module``.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    name, conv = _first_conv(module, name)
    if not name:
        raise ValueError("pass the model that contains the convolution, not the conv itself")
    if conv.groups != 1:
        raise ValueError(f"cannot adapt the grouped convolution {name} (groups={conv.groups})")
    conv_cls = next(c for c in _CONVS if isinstance(conv, c))
    new = conv_cls(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(_average_kernel(conv.weight, in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent_name, _, child_name = name.rpartition(".")
    setattr(module.get_submodule(parent_name), child_name, new)
    return new


#: What a weights file must be, for error messages.
EXPECTED = (
    "expected a torch state dict (torch.save(model.state_dict(), path)) or a checkpoint saved by "
    "extract.train (OUT/backbone.pt, backbone_swa.pt, best.pt or last.pt)"
)


def _what_file(path: Path) -> str:
    """A few words on what a file that torch cannot load looks like."""
    with open(path, "rb") as f:
        head = f.read(256)
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        return "a zip archive torch cannot read (truncated or damaged?)"
    if head.startswith(b"\x80"):
        return "a pickle of objects other than tensors, numbers and strings"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "not a file written by torch.save"
    if "\x00" in text:
        return "not a file written by torch.save"
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    return f"a text file (first line {first[:40]!r})"


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with one-line errors for the user.

    Raises:
        WeightsError: the path is missing, a folder, or not a file written by ``torch.save``.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"weights file {path} is a folder; {EXPECTED}")
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; {EXPECTED}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, KeyError, EOFError, ValueError,
            IndexError, TypeError, AttributeError) as err:
        raise WeightsError(f"weights file {path} is {_what_file(path)}; {EXPECTED}") from err


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state_dict in a file (prefixes removed): ``.safetensors``, or torch with ``weights_only=True``.

    Raises:
        WeightsError: unreadable file, or one that holds no state_dict of tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(path, device="cpu")
        except (SafetensorError, OSError) as err:
            raise WeightsError(f"weights file {path} is not a readable safetensors file ({err})") from None
    else:
        obj = read_torch_file(path)
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state"):  # model_state: PySlowFast / pytorchvideo
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"weights file {path} holds a {type(obj).__name__}, not a state_dict; {EXPECTED}"
        )
    not_tensors = [k for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise WeightsError(
            f"weights file {path}: entries {not_tensors[:_SHOW]} are not tensors; {EXPECTED}"
        )
    return {k.removeprefix(_MODULE_PREFIX): v for k, v in obj.items()}


def _fit_first_conv(model: nn.Module, state: dict[str, Tensor], own: Mapping[str, Tensor]) -> None:
    """Average an RGB first-conv kernel in ``state`` for a model with other input channels."""
    name, conv = _first_conv(model)
    key = f"{name}.weight"
    theirs, ours = state.get(key), own.get(key)
    if theirs is None or ours is None or theirs.shape == ours.shape:
        return
    rgb_into_other = theirs.shape[1] == 3 and ours.shape[1] != 3
    if rgb_into_other and theirs.shape[0] == ours.shape[0] and theirs.shape[2:] == ours.shape[2:]:
        logger.info("%s: RGB kernel averaged over channels for %d inputs", key, conv.in_channels)
        state[key] = _average_kernel(theirs, conv.in_channels)


def load_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    convert: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None,
    sha256: str | None = None,
    keep_init: tuple[str, ...] = (),
) -> str:
    """Load a local checkpoint into ``model`` and return the file's sha256.

    Accepts a plain state_dict or a dict with it under ``"model"``/``"state_dict"``/``"model_state"``; a
    ``"module."`` key prefix is dropped; ``convert`` then renames the keys. An RGB first conv loaded
    into a model with other input channels is averaged over channels (cross-modality init). The classifier
    (``fc.*``) is optional: checkpoint classifiers are skipped when the model has none or
    when their shapes differ (with a warning), and a model's classifier missing from the
    checkpoint keeps its random init. Every other key must match in name and shape;
    BatchNorm ``num_batches_tracked`` counters may be missing (old torchvision files).

    Args:
        model: the module to fill, with torchvision's key layout.
        path: the checkpoint file; read with ``torch.load(..., weights_only=True)``.
        convert: maps the file's state_dict to the model's key layout first (a published
            checkpoint's converter, see :mod:`extract.backbones.converters`);
            its refusal is reported with the file's path.
        sha256: the file's checksum when the caller has computed it already.
        keep_init: key fragments of the model's own modules the file need not hold; they
            keep their init (TIN's interlace nets on an ImageNet ResNet body).

    Returns:
        Hex sha256 of the file, to record next to the features it produces.

    Raises:
        WeightsError: unreadable file, or keys/shapes that do not fit the model (the first
            few offending keys are listed).
    """
    path = Path(path)
    state = _read_state_dict(path)
    if convert is not None:
        try:
            state = convert(state)
        except WeightsError as err:
            raise WeightsError(f"weights file {path}: {err}") from err
    own = model.state_dict()
    _fit_first_conv(model, state, own)

    def optional(key: str) -> bool:
        return key.startswith(CLASSIFIER_PREFIX) or key.endswith("num_batches_tracked")

    missing = [k for k in own if k not in state and not optional(k) and not any(f in k for f in keep_init)]
    unexpected = [k for k in state if k not in own and not optional(k)]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape and not k.startswith(CLASSIFIER_PREFIX)
    ]
    if missing or unexpected or wrong_shape:
        problems = [
            f"{label} ({len(keys)}): {', '.join(keys[:_SHOW])}{', ...' if len(keys) > _SHOW else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", wrong_shape),
            )
            if keys
        ]
        info = getattr(model, "info", None)
        name = getattr(info, "name", type(model).__name__)
        raise WeightsError(
            f"weights file {path} does not fit backbone {name}: {'; '.join(problems)}. Is it a "
            "checkpoint for this backbone (same architecture and depth)?"
        )
    loadable = {}
    for key, value in state.items():
        if key not in own:
            logger.info("%s: %s skipped (the model has no classifier)", path, key)
        elif value.shape != own[key].shape:
            logger.warning(
                "%s: %s skipped, shape %s != model's %s (different number of classes); "
                "the classifier keeps its random init",
                path,
                key,
                tuple(value.shape),
                tuple(own[key].shape),
            )
        else:
            loadable[key] = value
    model.load_state_dict(loadable, strict=False)
    return sha256 or file_sha256(path)
