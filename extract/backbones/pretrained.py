"""Named pretrained weights: a registry in torchvision's ``Weights`` style, with a download cache.

Every named weight is a frozen :class:`PretrainedWeights` record: the backbone it fits, its
short name (``kinetics400``) and aliases (torchvision's enum name ``KINETICS400_V1``), where
the file comes from (URL) and its checksum (a full sha256, or the hash prefix torchvision
puts in its file names), the dataset it was trained on, the input transforms it expects
(:class:`WeightsTransforms`), its feature dimension and clip length. Entries of torchvision
models are read from torchvision's own ``Weights`` enums (:func:`from_torchvision`), not
retyped.

``@WEIGHT`` in ``--backbone MODALITY:NAME@WEIGHT`` (and ``get_backbone(name, weights=...)``)
is resolved by :func:`resolve_weights`, in this order:

1. ``random``: explicit random init; ``default`` (or torchvision's ``DEFAULT``): the
   backbone's default weights, an error listing its weights if it has none;
2. a known weight of that backbone, by short name (``kinetics400``), alias
   (``KINETICS400_V1``) or source-prefixed alias (``torchvision:KINETICS400_V1``): a known
   name always wins over a file of that name in the current folder;
3. something that looks like a path (has a ``/``, starts with ``.`` or ``~``, has a file
   suffix such as ``.pt``, or names an existing file): a local checkpoint;
4. anything else: one error line listing the backbone's weights.

Files live in torch.hub's checkpoint folder (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``), under the URL's file name, as torchvision's own
``weights=`` does: the first use downloads them (with a progress bar), later uses read the
cache and need no network. The checksum is checked on every load (the sha256 is computed
anyway, to be recorded with the features). Offline, put the file there by hand; the error
of a failed download names the URL and that path.

Plug-in points for other sources (one entry each): ``converter`` maps a published key
layout to the backbone's (applied to the file's state_dict before the keys are checked);
a source other than a plain URL (the Hugging Face cache) subclasses :class:`PretrainedWeights`
and overrides :meth:`~PretrainedWeights.cache_path` and :meth:`~PretrainedWeights.download`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
from torch import Tensor

from extract.backbones.weights import WeightsError, file_sha256

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT",
    "RANDOM",
    "PretrainedWeights",
    "WeightsTransforms",
    "default_weights",
    "from_torchvision",
    "register_all",
    "short_name",
    "list_weights",
    "register_weights",
    "resolve_weights",
    "weights_help",
]

#: ``@random``: explicit random init (from the run's seed).
RANDOM = "random"
#: ``@default``: the backbone's default weights (what a CLI ``--backbone NAME`` without ``@`` means).
DEFAULT = "default"
_DEFAULT_SPELLINGS = (DEFAULT, "DEFAULT")
#: torchvision's ``NAME-<sha256 prefix>.pth`` file names (torch.hub.HASH_REGEX, with a minimum length).
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")
StateDict = dict[str, Tensor]
Converter = Callable[[StateDict], StateDict]


@dataclass(frozen=True)
class WeightsTransforms:
    """The inputs a weight was trained on (torchvision's ``VideoClassification`` preset plus clips).

    Attributes:
        crop_size: side of the square crop in pixels.
        resize_size: the resize before the crop: one value (short side) or (height, width).
        mean: per-channel mean of inputs in [0, 1].
        std: per-channel standard deviation.
        clip_len: frames per clip (1 for image weights).
        frame_rate: frames per second the clips were sampled at in evaluation, where known.
    """

    crop_size: int
    resize_size: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    clip_len: int = 1
    frame_rate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class PretrainedWeights:
    """One named weight of one backbone.

    Attributes:
        backbone: the registered backbone it loads into.
        name: short name, unique for the backbone (``kinetics400``, ``imagenet1k``).
        url: where the file is downloaded from.
        dataset: what it was trained on (``Kinetics-400``, ``ImageNet-1K``).
        transforms: the input it expects.
        feature_dim: D of the backbone's features with these weights.
        aliases: other accepted names (torchvision's enum name, ``KINETICS400_V1``).
        source: the family of the aliases, for the prefixed spelling ``SOURCE:ALIAS``.
        sha256: full checksum of the file; None checks the hash prefix in the URL's file
            name (torchvision's ``NAME-<hash prefix>.pth``) instead, or nothing when the name
            has none (a source that publishes no checksum: the sha256 of the file loaded is
            still recorded with the features).
        converter: maps the file's state_dict to the backbone's key layout; None when it
            already has it.
        default: the weight a backbone without ``@`` uses (at most one per backbone).
        keep_init: key fragments of the backbone's own modules the file does not hold; they
            keep their init (TIN's interlace nets on an ImageNet ResNet body).
    """

    backbone: str
    name: str
    url: str
    dataset: str
    transforms: WeightsTransforms
    feature_dim: int
    aliases: tuple[str, ...] = ()
    source: str = "torchvision"
    sha256: str | None = None
    converter: Converter | None = None
    default: bool = False
    keep_init: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if not self.name or not self.backbone or not self.url:
            raise ValueError("PretrainedWeights needs a backbone, a name and a url")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{self.full_name}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")

    @property
    def full_name(self) -> str:
        """``BACKBONE@NAME``, as written after ``--backbone``."""
        return f"{self.backbone}@{self.name}"

    @property
    def clip_len(self) -> int:
        """Frames per clip the weight was trained on."""
        return self.transforms.clip_len

    @property
    def file_name(self) -> str:
        """The file's name in the cache: the URL's last path component."""
        return os.path.basename(urlparse(self.url).path)

    @property
    def hash_prefix(self) -> str | None:
        """The sha256 prefix torchvision writes into its file names (``r3d_18-b3b3357e.pth``)."""
        m = _HASH_IN_NAME.search(self.file_name)
        return m.group(1) if m else None

    def spellings(self) -> tuple[str, ...]:
        """Every accepted ``@`` spelling: name, aliases and ``SOURCE:ALIAS``."""
        return (self.name, *self.aliases, *(f"{self.source}:{a}" for a in self.aliases))

    def cache_path(self) -> Path:
        """Where the file lives once downloaded (torch.hub's checkpoint folder)."""
        return Path(torch.hub.get_dir()) / "checkpoints" / self.file_name

    def is_cached(self) -> bool:
        """True when the file is already in the cache (no download needed)."""
        return self.cache_path().is_file()

    def download(self, dst: Path, progress: bool) -> None:
        """Download the file to ``dst`` (torch.hub's downloader, a temp file moved into place).

        Raises:
            OSError: no network, or the server refused.
            RuntimeError: the downloaded file does not have the expected hash prefix.
        """
        dst.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(self.url, str(dst), hash_prefix=self.hash_prefix, progress=progress)

    def fetch(self, *, progress: bool = True) -> Path:
        """The local file: from the cache, downloaded into it on first use.

        Raises:
            WeightsError: the download failed (one line naming the URL and the cache path).
        """
        path = self.cache_path()
        if path.is_file():
            return path
        logger.info("downloading %s from %s to %s", self.full_name, self.url, path)
        try:
            self.download(path, progress)
        except (OSError, URLError, RuntimeError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise WeightsError(
                f"cannot download weights {self.full_name} from {self.url} ({reason}); without a "
                f"network, put that file by hand at {path}"
            ) from None
        return path

    def check_file(self, path: Path) -> str:
        """The file's sha256, after checking it against :attr:`sha256` or :attr:`hash_prefix` (if any).

        Raises:
            WeightsError: the checksum differs (a damaged or different file).
        """
        digest = file_sha256(path)
        want = self.sha256 or self.hash_prefix or ""
        if not digest.startswith(want):
            raise WeightsError(
                f"weights file {path} has sha256 {digest[:16]}... but {self.full_name} has "
                f"{want[:16]}...; delete the file (it is damaged or not {self.url}) and rerun to download it"
            )
        return digest

    def record(self, sha256: str) -> dict[str, Any]:
        """What the feature set's attrs record about the weight actually loaded."""
        return {"name": self.name, "source": self.url, "sha256": sha256, "dataset": self.dataset}


_WEIGHTS: dict[str, list[PretrainedWeights]] = {}


def register_weights(entry: PretrainedWeights) -> PretrainedWeights:
    """Add a named weight to the registry (the backbone need not be registered yet).

    Raises:
        ValueError: one of its spellings is taken for that backbone, or it is a second default.
    """
    entries = _WEIGHTS.setdefault(entry.backbone, [])
    taken = {s for e in entries for s in e.spellings()} | {RANDOM, *_DEFAULT_SPELLINGS}
    clash = sorted(set(entry.spellings()) & taken)
    if clash:
        raise ValueError(f"weights {entry.full_name}: {clash} already names a weight of {entry.backbone}")
    if entry.default and any(e.default for e in entries):
        raise ValueError(f"weights {entry.full_name}: {entry.backbone} already has a default weight")
    entries.append(entry)
    return entry


def list_weights(backbone: str | None = None) -> list[PretrainedWeights]:
    """Named weights of one backbone (registration order), or of all backbones sorted by name."""
    if backbone is not None:
        return list(_WEIGHTS.get(backbone, ()))
    return [e for name in sorted(_WEIGHTS) for e in _WEIGHTS[name]]


def default_weights(backbone: str) -> PretrainedWeights | None:
    """The weight a backbone without ``@`` uses, or None when it has none."""
    return next((e for e in _WEIGHTS.get(backbone, ()) if e.default), None)


def weights_help(backbone: str) -> str:
    """``kinetics400 (KINETICS400_V1), ...`` or ``none``: a backbone's weights for error lines."""
    names = [f"{e.name} ({', '.join(e.aliases)})" if e.aliases else e.name for e in _WEIGHTS.get(backbone, ())]
    return ", ".join(names) or "none"


def _looks_like_path(text: str) -> bool:
    return ("/" in text or os.sep in text or text.startswith((".", "~")) or bool(Path(text).suffix)
            or os.path.isfile(text))


def resolve_weights(
    backbone: str, weights: str | os.PathLike[str] | None
) -> PretrainedWeights | Path | str | None:
    """What ``weights`` means for ``backbone`` (the rule in the module docstring).

    Args:
        backbone: a registered backbone name.
        weights: ``None``, ``"random"``, ``"default"``, a weight's spelling, or a path.

    Returns:
        None (not given: the caller's default), :data:`RANDOM`, a :class:`PretrainedWeights`
        or the local file's :class:`~pathlib.Path`.

    Raises:
        WeightsError: ``default`` for a backbone without weights, or a text that is neither
            a known weight nor a path (one line listing the backbone's weights).
    """
    if weights is None or isinstance(weights, os.PathLike):
        return None if weights is None else Path(weights)
    text = str(weights).strip()
    if text == RANDOM:
        return RANDOM
    if text in _DEFAULT_SPELLINGS:
        entry = default_weights(backbone)
        if entry is None:
            raise WeightsError(
                f"backbone {backbone} has no pretrained weights (named weights: {weights_help(backbone)}); "
                f"write {backbone}@random for a random init, or {backbone}@PATH for a local checkpoint"
            )
        return entry
    for entry in _WEIGHTS.get(backbone, ()):
        if text in entry.spellings():
            return entry
    if _looks_like_path(text):
        return Path(text).expanduser()
    raise WeightsError(
        f"unknown weights {text!r} for backbone {backbone}: its named weights are {weights_help(backbone)}; "
        f"or write @random, or a file path (with a '/' or a suffix such as .pt)"
    )


def short_name(enum_name: str) -> str:
    """torchvision enum name -> our short name: lower case, a trailing ``_v1`` dropped.

    ``KINETICS400_V1`` -> ``kinetics400``, ``IMAGENET1K_V2`` -> ``imagenet1k_v2``,
    ``KINETICS400_IMAGENET22K_V1`` -> ``kinetics400_imagenet22k``.
    """
    return enum_name.lower().removesuffix("_v1")


def from_torchvision(
    backbone: str,
    enum_cls: Any,
    *,
    feature_dim: int,
    default: bool = True,
    clip_len: int | None = None,
    converter: Converter | None = None,
    keep_init: tuple[str, ...] = (),
) -> list[PretrainedWeights]:
    """Registry entries read from a torchvision ``Weights`` enum, one per member.

    URL, hash prefix, dataset (the first key of ``meta["_metrics"]``), crop/resize size and
    mean/std come from torchvision; the clip length and frame rate from the member's
    ``_docs`` (``clip_len=16``, ``frame_rate=15``), 1 frame for image weights. Names follow
    :func:`short_name`, with torchvision's enum name as alias.

    Args:
        backbone: our backbone name.
        enum_cls: e.g. ``torchvision.models.video.R2Plus1D_18_Weights``.
        feature_dim: D of our backbone.
        default: make torchvision's ``DEFAULT`` member the backbone's default weight
            (False for backbones whose default comes from elsewhere, or that have none).
        clip_len: frames per clip instead of the docs' figure.
        converter: torchvision's layout -> ours, where they differ (the classifier's keys).
        keep_init: see :attr:`PretrainedWeights.keep_init`.
    """
    out = []
    for enum in enum_cls:
        preset = {**enum.transforms.func.__init__.__kwdefaults__, **enum.transforms.keywords}
        docs = enum.meta.get("_docs", "")
        found_len = re.search(r"clip_len=(\d+)", docs)
        found_rate = re.search(r"frame_rate=([\d.]+)", docs)
        crop, resize = preset["crop_size"], preset["resize_size"]
        transforms = WeightsTransforms(
            crop_size=int(crop[0] if isinstance(crop, (tuple, list)) else crop),
            resize_size=tuple(int(v) for v in (resize if isinstance(resize, (tuple, list)) else (resize,))),
            mean=tuple(float(v) for v in preset["mean"]),
            std=tuple(float(v) for v in preset["std"]),
            clip_len=clip_len or (int(found_len.group(1)) if found_len else 1),
            frame_rate=float(found_rate.group(1)) if found_rate else None,
        )
        out.append(PretrainedWeights(
            backbone=backbone,
            name=short_name(enum.name),
            url=enum.url,
            dataset=next(iter(enum.meta["_metrics"])) + (" (ImageNet-22K init)" if "IMAGENET22K" in enum.name else ""),
            transforms=transforms,
            feature_dim=feature_dim,
            aliases=(enum.name,),
            source="torchvision",
            converter=converter,
            default=default and enum is enum_cls.DEFAULT,
            keep_init=keep_init,
        ))
    return out


def register_all(entries: Iterable[PretrainedWeights]) -> None:
    """:func:`register_weights` each entry."""
    for entry in entries:
        register_weights(entry)
