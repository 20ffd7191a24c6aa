"""The files of a training run, written atomically, all loadable with ``weights_only=True``.

::

    OUT/recipe.json        the resolved TrainRecipe
    OUT/metrics.json       per-epoch history (loss, data wait, val metrics), best epoch, SWA result
    OUT/last.pt            everything to resume: model, optimizer, grad scaler, SWA average,
                           epoch, step, RNG states, history, recipe, classes
    OUT/best.pt            plain state_dict of the epoch with the best val class mAP
    OUT/backbone.pt        plain state_dict of the final weights      -> extract.run --weights
    OUT/backbone_swa.pt    plain state_dict of the SWA average        -> extract.run --weights

A plain state_dict (torchvision layout, classifier ``fc.*`` included) loads with
``extract.backbones.load_weights``, which skips ``fc.*`` for a features-only backbone;
``last.pt`` loads there too (its state_dict is under ``"model"``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from extract.backbones import read_torch_file

LAST, BEST, FINAL, SWA = "last.pt", "best.pt", "backbone.pt", "backbone_swa.pt"
RECIPE_JSON, METRICS_JSON = "recipe.json", "metrics.json"


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def save_torch(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name, then rename (a crash never leaves half a file)."""
    _replace_atomically(path, lambda tmp: torch.save(obj, tmp))


def save_json(obj: Any, path: Path) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2) + "\n"))


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict as detached CPU tensors (a snapshot, not views of live weights)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def rng_state() -> dict[str, Any]:
    """The global torch generators (dropout draws from them)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read ``last.pt`` (``weights_only=True``: plain tensors, numbers, strings, lists, dicts).

    Raises:
        WeightsError: the file is not one ``torch.save`` wrote (one line, for the user).
    """
    return read_torch_file(path)
