"""Any timm image model as a TSN frame encoder: the ``timm/`` backbone family.

``get_backbone("timm/convnext_tiny.fb_in22k")`` builds ``timm.create_model(name,
num_classes=0)`` and runs it on every frame (``kind="frame2d"``, one frame per clip): the
feature of a frame is the model's own pooling of its feature map,
``forward_head(forward_features(x), pre_logits=True)``, of ``D = head_hidden_size or
num_features`` dims. Input size, mean and std come from the model's ``pretrained_cfg``.

Weights (the ``@`` part of ``--backbone``):

* none (or ``@default``): the pretrained weights the name's tag selects (``.fb_in22k``; a
  name without a tag takes timm's default tag), read from the Hugging Face cache
  (:mod:`extract.backbones.hf_hub`), downloaded there on first use; ``timm/MODEL@TAG`` is
  another spelling of ``timm/MODEL.TAG`` (the recorded weight name is the tag);
* ``@random``: timm's random init (seeded by the caller);
* ``@PATH``: a local file, either in timm's layout (the published ``model.safetensors`` /
  ``pytorch_model.bin``, loaded through timm's own checkpoint filter) or a checkpoint of
  this backbone written by ``extract.train`` (keys ``net.*``, optional ``fc.*``).

Flow (``in_channels=2``): the input convolution named by ``pretrained_cfg["first_conv"]``
is rebuilt with the project's cross-modality rule (:func:`~extract.backbones.weights.adapt_first_conv`:
the RGB kernel averaged over its channels and repeated, as for the torchvision frame nets),
not timm's ``in_chans`` rule (which repeats and rescales the RGB kernels), so every flow net
of the project starts the same way; the normalisation becomes mean 0.5 and the mean RGB std.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any

import torch
from torch import Tensor, nn

from extract.backbones.frame2d import FrameBackbone
from extract.backbones.hf_hub import hub_file, in_hf_cache
from extract.backbones.pretrained import DEFAULT, RANDOM
from extract.backbones.registry import BackboneInfo, register_backbone_family
from extract.backbones.weights import WeightsError, _read_state_dict, adapt_first_conv, file_sha256, load_weights
from store.errors import SettingsError

logger = logging.getLogger(__name__)

__all__ = ["LISTED", "PREFIX", "TimmFrames", "listed_weights", "timm_frames"]

PREFIX = "timm"
#: Files a timm repository on the hub holds its weights in, preferred first.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
_OURS = ("net.", "fc.")  # key prefixes of a checkpoint of this backbone (extract.train)
#: Weights ``--list-backbones`` shows, with the data they were trained on (any timm model works).
LISTED = {
    "convnext_tiny.fb_in22k": "ImageNet-22k",
    "convnext_tiny.fb_in1k": "ImageNet-1k",
    "vit_base_patch16_clip_224.openai": "OpenAI CLIP (WIT-400M)",
    "resnet50.a1_in1k": "ImageNet-1k",
}


class TimmFrames(FrameBackbone):
    """A timm image model applied per frame; its pooled pre-logits features averaged over T.

    Attributes:
        net: the timm model (``num_classes=0``); ``state_dict`` keys are ``net.<timm key>``.
    """

    stage_names = (("net",),)

    def frame_features(self, frames: Tensor) -> Tensor:
        """``(N, C, H, W)`` normalised frames -> ``(N, D)``: timm's features + its own pooling."""
        feats = self.net.forward_features(frames)  # (N, C, H, W) -> (N, D, h, w) or (N, L, D)
        return self.net.forward_head(feats, pre_logits=True)  # -> (N, D)


def _feature_dim(net: nn.Module) -> int:
    """D of ``forward_head(..., pre_logits=True)``: the head's hidden size where it has one."""
    return int(getattr(net, "head_hidden_size", None) or net.num_features)


def _unknown_model(arch: str) -> SettingsError:
    import timm

    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close: {', '.join(close)}" if close else ""
    return SettingsError(f"unknown timm model {arch!r}{hint} (timm.list_models('*PATTERN*') lists them)")


def _pretrained_cfg(name: str) -> Any:
    """timm's pretrained cfg of ``name`` (``arch`` or ``arch.tag``), or None for an untagged arch."""
    from timm.models import get_pretrained_cfg, list_pretrained, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    try:
        return get_pretrained_cfg(name)
    except RuntimeError:  # a tag the architecture does not have
        tags = [m.partition(".")[2] for m in list_pretrained(f"{arch}.*")]
        raise SettingsError(
            f"timm model {arch} has no pretrained tag {tag!r}; tags: {', '.join(tags) or 'none'}"
        ) from None


def _is_tag(arch: str, text: str) -> bool:
    """True when ``text`` is one of timm's pretrained tags of ``arch``."""
    from timm.models import list_pretrained

    return f"{arch}.{text}" in list_pretrained(f"{arch}.*")


def _hub_files(name: str, cfg: Any) -> tuple[str, tuple[str, ...], str | None]:
    """Repository, candidate files and revision of ``name``'s pretrained weights on the hub."""
    if cfg is None or not cfg.hf_hub_id:
        raise WeightsError(
            f"timm model {name} has no pretrained weights on the Hugging Face Hub; "
            f"write @{RANDOM} for a random init or @PATH for a local file"
        )
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return repo, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES, revision or None


def _hub_state(name: str, cfg: Any) -> tuple[dict[str, Tensor], dict[str, str], str]:
    """The state dict of ``name``'s pretrained weights from the hub cache, its record and sha256."""
    repo, files, revision = _hub_files(name, cfg)
    found = hub_file(repo, files, revision=revision)
    return _read_state_dict(found.path), found.record(cfg.tag), found.sha256


def listed_weights() -> list[dict[str, Any]]:
    """:data:`LISTED` as ``--list-backbones`` rows (D from a model built on the meta device)."""
    import timm

    rows = []
    for name, dataset in LISTED.items():
        cfg = _pretrained_cfg(name)
        repo, files, revision = _hub_files(name, cfg)
        with torch.device("meta"):  # shapes only: no memory, no init cost
            net = timm.create_model(name, pretrained=False, num_classes=0)
        rows.append({
            "backbone": f"{PREFIX}/{name}", "weights": "", "dataset": dataset,
            "feature_dim": _feature_dim(net), "clip_len": 1,
            "crop": int(cfg.input_size[-1]), "cached": in_hf_cache(repo, files, revision=revision),
            "source": f"hf-hub:{repo}",
        })
    return rows


def _create(arch_tag: str, state: dict[str, Tensor] | None) -> nn.Module:
    """``timm.create_model(num_classes=0)``, loading ``state`` through timm's checkpoint filter."""
    import timm

    if state is None:
        return timm.create_model(arch_tag, pretrained=False, num_classes=0)
    overlay = {"source": "state_dict", "state_dict": state}
    try:
        model = timm.create_model(arch_tag, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)
    except (RuntimeError, KeyError, ValueError) as err:  # keys or shapes that do not fit
        first = str(err).strip().splitlines()
        raise WeightsError(
            f"weights do not fit timm model {arch_tag}: {' '.join(first[:3])[:300]}"
        ) from None
    model.pretrained_cfg["state_dict"] = None  # drop the reference to the loaded tensors
    return model


def timm_frames(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
) -> TimmFrames:
    """Build ``timm/NAME`` as a frame encoder (see the module docstring).

    Args:
        name: a timm model name, with or without its pretrained tag (``convnext_tiny.fb_in22k``).
        weights: None or ``"default"`` = the pretrained weights of the tag, from the hub
            cache; a pretrained tag of the model (``@TAG``); ``"random"``; or a local file.
        in_channels: 3 for RGB; another count (2 for flow) adapts the input conv.
        num_classes: add a classifier of this size (fine-tuning).
        dropout: before the classifier.
        modality: what the channels hold; defaults from ``in_channels``.

    Raises:
        SettingsError: unknown model or tag.
        WeightsError: weights not in the cache and not downloadable, or that do not fit.
    """
    import timm
    from timm.models import split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        raise _unknown_model(arch)
    if weights is not None and str(weights) not in (RANDOM, DEFAULT, DEFAULT.upper()) and _is_tag(arch, str(weights)):
        if tag and tag != str(weights):  # timm/x.a@b
            raise SettingsError(f"timm/{name}@{weights}: the name already has the tag {tag!r}; write one of them")
        name, weights = f"{arch}.{weights}", None  # timm/MODEL@TAG is timm/MODEL.TAG
    cfg = _pretrained_cfg(name)
    record: dict[str, str] = {"name": RANDOM}
    sha256: str | None = None
    ours: str | None = None  # a checkpoint of this backbone, loaded after the adaptation
    if weights is None or str(weights) in (DEFAULT, DEFAULT.upper()):
        state, record, sha256 = _hub_state(name, cfg)
    elif str(weights) == RANDOM:
        state = None
    else:
        state = _read_state_dict(weights)
        sha256 = file_sha256(weights)
        record = {"name": "file", "source": "local file", "sha256": sha256}
        if all(k.startswith(_OURS) for k in state):
            state, ours = None, str(weights)
    net = _create(name, state)
    pcfg = net.pretrained_cfg
    rgb = BackboneInfo(
        name=f"{PREFIX}/{name}",
        kind="frame2d",
        feature_dim=_feature_dim(net),
        clip_len=1,
        input_size=int(pcfg.get("input_size", (3, 224, 224))[-1]),
        mean=tuple(pcfg.get("mean", ())),
        std=tuple(pcfg.get("std", ())),
    )
    model = TimmFrames(rgb, {"net": net}, num_classes=num_classes, dropout=dropout)
    if in_channels != 3:
        first = pcfg.get("first_conv")
        if not isinstance(first, str):
            raise SettingsError(f"timm model {arch} names no single input convolution ({first!r}); "
                                f"it cannot take {in_channels} channels")
        adapt_first_conv(net, in_channels, first)
    model.info = rgb.with_input_channels(in_channels, modality)
    if ours is not None:
        load_weights(model, ours)
    model.weights_sha256, model.weights_record = sha256, record
    if sha256 is None:
        logger.info("backbone %s is randomly initialised (@random)", model.info.name)
    else:
        logger.info("backbone %s loaded %s (sha256 %s)", model.info.name, record["source"], sha256)
    return model


register_backbone_family(PREFIX, timm_frames, listed_weights)
