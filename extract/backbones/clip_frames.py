"""open_clip image towers as TSN frame encoders: the ``clip/`` backbone family.

``get_backbone("clip/ViT-B-32", weights="laion2b_s34b_b79k")`` builds
``open_clip.create_model(arch, pretrained=...)`` and keeps its image tower ``.visual``,
run on every frame (``kind="frame2d"``, one frame per clip). A frame's feature is
``encode_image(x)`` (unnormalised, ``D = embed_dim``, 512 for ViT-B-32, 768 for ViT-L-14);
input size, mean and std are open_clip's preprocess config of the model and weights.

Weights (the ``@`` part of ``--backbone``, required: open_clip has no default weights):

* a pretrained tag of the architecture (``open_clip.list_pretrained_tags_by_model``):
  the file the tag names on the Hugging Face Hub, read from the Hugging Face cache
  (:mod:`extract.backbones.hf_hub`), downloaded there on first use;
* ``@random``: a random init (seeded by the caller);
* ``@PATH``: a local open_clip checkpoint of the whole CLIP model.

CLIP towers take RGB images only: a flow or audio set with a ``clip/`` backbone is refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from extract.backbones.frame2d import FrameBackbone
from extract.backbones.hf_hub import hub_file, in_hf_cache
from extract.backbones.pretrained import DEFAULT, RANDOM
from extract.backbones.registry import BackboneInfo, register_backbone_family
from extract.backbones.weights import WeightsError, file_sha256
from store.errors import SettingsError

logger = logging.getLogger(__name__)

__all__ = ["LISTED", "PREFIX", "ClipFrames", "clip_frames", "listed_weights"]

PREFIX = "clip"
#: Weights ``--list-backbones`` shows, with the data they were trained on (any open_clip tag works).
LISTED = {
    ("ViT-B-32", "laion2b_s34b_b79k"): "LAION-2B",
    ("ViT-B-32", "openai"): "OpenAI CLIP (WIT-400M)",
    ("ViT-L-14", "openai"): "OpenAI CLIP (WIT-400M)",
    ("ViT-L-14", "laion2b_s32b_b82k"): "LAION-2B",
}


class ClipFrames(FrameBackbone):
    """An open_clip image tower applied per frame; its embeddings averaged over T.

    Attributes:
        visual: the tower (``state_dict`` keys ``visual.*``, as in an open_clip checkpoint).
    """

    stage_names = (("visual",),)

    def frame_features(self, frames: Tensor) -> Tensor:
        """``(N, 3, H, W)`` normalised frames -> ``(N, D)`` image embeddings (``encode_image``)."""
        return self.visual(frames)  # (N, 3, H, W) -> (N, D)


def _tags(arch: str) -> str:
    import open_clip

    return ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"


def _hub_files(arch: str, tag: str, cfg: dict[str, Any]) -> tuple[str, list[str]]:
    """Repository and candidate files (safetensors first) of a pretrained tag on the hub."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if not cfg.get("hf_hub"):
        raise WeightsError(f"open_clip weights {arch}@{tag} are not on the Hugging Face Hub "
                           f"({cfg.get('url') or 'no source'}); download the file and pass @PATH")
    repo, filename = os.path.split(cfg["hf_hub"])  # "org/name/" -> ("org/name", ""): the default file
    filename = filename or HF_WEIGHTS_NAME
    files = [filename]
    if filename == HF_WEIGHTS_NAME:
        files.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        files.insert(0, filename[:-4] + ".safetensors")
    return repo, files


def _hub_checkpoint(arch: str, tag: str, cfg: dict[str, Any]) -> tuple[Path, dict[str, str], str]:
    """The file of a pretrained tag, from the hub cache, with its record and sha256."""
    found = hub_file(*_hub_files(arch, tag, cfg))
    return found.path, found.record(tag), found.sha256


def listed_weights() -> list[dict[str, Any]]:
    """:data:`LISTED` as ``--list-backbones`` rows (D and size from open_clip's model config)."""
    import open_clip

    rows = []
    for (arch, tag), dataset in LISTED.items():
        repo, files = _hub_files(arch, tag, open_clip.get_pretrained_cfg(arch, tag))
        config = open_clip.get_model_config(arch)
        rows.append({
            "backbone": f"{PREFIX}/{arch}", "weights": tag, "dataset": dataset,
            "feature_dim": int(config["embed_dim"]), "clip_len": 1, "crop": int(config["vision_cfg"]["image_size"]),
            "cached": in_hf_cache(repo, files), "source": f"hf-hub:{repo}",
        })
    return rows


def clip_frames(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    in_channels: int = 3,
    num_classes: int | None = None,
    dropout: float = 0.5,
    modality: str | None = None,
) -> ClipFrames:
    """Build ``clip/ARCH`` with weights ``@TAG`` / ``@random`` / ``@PATH`` (see the module docstring).

    Args:
        name: an open_clip architecture (``ViT-B-32``, ``ViT-L-14``, ``open_clip.list_models()``).
        weights: a pretrained tag, ``"random"`` or a local checkpoint; None is refused.
        in_channels: must be 3 (RGB).
        num_classes: add a classifier of this size (fine-tuning).
        dropout: before the classifier.
        modality: must be None or ``"rgb"``.

    Raises:
        SettingsError: unknown architecture or tag, no weights named, a non-RGB input.
        WeightsError: weights not in the cache and not downloadable, or that do not fit.
    """
    import open_clip
    from open_clip.transform import merge_preprocess_dict

    if name not in open_clip.list_models():
        raise SettingsError(f"unknown open_clip model {name!r}; open_clip.list_models() lists them "
                            "(ViT-B-32, ViT-L-14, RN50, ...)")
    if in_channels != 3 or modality not in (None, "rgb"):
        raise SettingsError(f"{PREFIX}/{name} is a CLIP image tower: it takes RGB frames only, not "
                            f"{modality or 'flow'} ({in_channels} channels); use a timm/ or torchvision backbone")
    if weights is None or str(weights) in (DEFAULT, DEFAULT.upper()):
        raise SettingsError(f"{PREFIX}/{name} needs its weights after '@': a pretrained tag "
                            f"({_tags(name)}), @{RANDOM} or @PATH")
    cfg: dict[str, Any] = {}
    record: dict[str, str] = {"name": RANDOM}
    path: Path | None = None
    sha256: str | None = None
    if str(weights) == RANDOM:
        pass
    elif str(weights) in open_clip.list_pretrained_tags_by_model(name):
        cfg = open_clip.get_pretrained_cfg(name, str(weights))
        path, record, sha256 = _hub_checkpoint(name, str(weights), cfg)
    elif Path(weights).is_file():
        path, sha256 = Path(weights), file_sha256(weights)
        record = {"name": "file", "source": "local file", "sha256": sha256}
    else:
        raise SettingsError(f"{PREFIX}/{name}@{weights}: not a pretrained tag of {name} ({_tags(name)}), "
                            f"nor @{RANDOM}, nor an existing file")
    try:
        clip = open_clip.create_model(
            name,
            pretrained=str(path) if path else None,
            force_quick_gelu=bool(cfg.get("quick_gelu", False)),
            pretrained_image=False,
            pretrained_text=False,
        )
    except (RuntimeError, KeyError, ValueError) as err:  # a checkpoint that does not fit
        first = " ".join(str(err).strip().splitlines()[:3])[:300]
        raise WeightsError(f"weights {weights} do not fit open_clip model {name}: {first}") from None
    visual = clip.visual
    pre = merge_preprocess_dict(dict(visual.preprocess_cfg), cfg)
    size = pre.get("size") or visual.image_size
    info = BackboneInfo(
        name=f"{PREFIX}/{name}",
        kind="frame2d",
        feature_dim=int(open_clip.get_model_config(name)["embed_dim"]),
        clip_len=1,
        input_size=int(size if isinstance(size, int) else size[0]),
        mean=tuple(pre["mean"]),
        std=tuple(pre["std"]),
    )
    del clip  # the text tower is not needed
    model = ClipFrames(info, {"visual": visual}, num_classes=num_classes, dropout=dropout)
    model.weights_sha256, model.weights_record = sha256, record
    if path is None:
        logger.info("backbone %s is randomly initialised (@random)", info.name)
    else:
        logger.info("backbone %s loaded %s (sha256 %s)", info.name, path, sha256)
    return model


register_backbone_family(PREFIX, clip_frames, listed_weights)
