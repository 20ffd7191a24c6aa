"""The backbone registry, the :class:`BackboneInfo` record and the :class:`Backbone` interface.

A registry in the torchvision style: one dict, one decorator over plain builder functions,
``get_backbone(name, **kw)`` and ``list_backbones()``. Families of external models are one
entry per prefix (``register_backbone_family("timm", builder)``): ``get_backbone("timm/x")``
calls the family's builder with ``"x"``. Every backbone carries a frozen
:class:`BackboneInfo` that says what it expects (frames per clip, crop size, normalisation,
channels) and what it returns (feature dim), so the sampler, the transforms and the store's
attrs read one record.

Input layout, for every backbone: ``x`` is ``(B, C, T, H, W)`` float, already normalised
with ``info.mean`` / ``info.std``.

- ``kind="frame2d"`` (TSN-style frame models, ``clip_len == 1``): upstream, each sampled
  frame is its own clip on the store's K axis, so they are normally fed ``T == 1``. Given
  ``T > 1`` they run every frame through the 2D net and return the mean feature over T.
- ``kind="clip3d"`` (3D nets, and TSM whose convolutions are 2D but which mixes the T
  frames of one clip): a clip of ``info.clip_len`` frames gives one feature.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import Tensor, nn

from extract.backbones.converters import converter_for
from extract.backbones.pretrained import RANDOM, PretrainedWeights, resolve_weights, weights_help
from extract.backbones.weights import adapt_first_conv, load_weights
from store.errors import SettingsError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "Backbone",
    "BackboneInfo",
    "get_backbone",
    "list_backbone_families",
    "list_backbones",
    "list_family_weights",
    "register_backbone",
    "register_backbone_family",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's Kinetics-400 video models (R(2+1)D, R3D, MC3) were trained with these.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# Non-RGB inputs adapted from an RGB net (flow stacks): values in [0, 1] centred on 0.5,
# scaled by the mean RGB std, as TSN/TSM normalise their flow images.
NON_RGB_MEAN = 0.5

BackboneKind = Literal["frame2d", "clip3d", "audio2d", "audio1d"]
_KINDS = ("frame2d", "clip3d", "audio2d", "audio1d")


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone expects and returns.

    Attributes:
        name: registry name of the backbone.
        kind: ``"frame2d"`` (one frame per clip, TSN style) or ``"clip3d"`` (a clip of
            ``clip_len`` frames per feature: 3D nets and TSM).
        feature_dim: D, the size of ``forward_features``' output.
        clip_len: frames per clip: 1 for frame models, T for TSM / 3D nets.
        input_size: side of the square crop in pixels.
        mean: per-channel mean subtracted from inputs in [0, 1]; its length is the number
            of input channels.
        std: per-channel standard deviation (same length as ``mean``).
        modality: what the input channels hold: ``"rgb"``, ``"flow"``, ...
    """

    name: str
    kind: BackboneKind
    feature_dim: int
    clip_len: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    modality: str = "rgb"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if not self.name:
            raise ValueError("BackboneInfo.name must be a non-empty string")
        if self.kind not in _KINDS:
            raise ValueError(f"BackboneInfo.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.feature_dim < 1 or self.input_size < 1 or self.clip_len < 1:
            raise ValueError(
                "BackboneInfo.feature_dim, input_size and clip_len must be positive, got "
                f"{self.feature_dim}, {self.input_size}, {self.clip_len}"
            )
        if self.kind == "frame2d" and self.clip_len != 1:
            raise ValueError(
                f"a frame2d backbone takes one frame per clip (clip_len=1), got {self.clip_len}; "
                "use kind='clip3d' for models that mix the frames of a clip"
            )
        if not self.mean or len(self.mean) != len(self.std):
            raise ValueError(
                f"BackboneInfo.mean and std need one value per input channel, got "
                f"{len(self.mean)} and {len(self.std)}"
            )
        if min(self.std) <= 0:
            raise ValueError(f"BackboneInfo.std must be positive, got {self.std}")
        if not self.modality:
            raise ValueError("BackboneInfo.modality must be a non-empty string such as 'rgb'")

    @property
    def in_channels(self) -> int:
        """Number of input channels (the length of ``mean``)."""
        return len(self.mean)

    def with_input_channels(self, in_channels: int, modality: str | None = None) -> BackboneInfo:
        """The same record for an RGB net whose first conv is adapted to ``in_channels``.

        Args:
            in_channels: new channel count; 3 keeps the RGB normalisation.
            modality: defaults to ``"rgb"`` for 3 channels and ``"flow"`` otherwise.

        Returns:
            A copy with ``mean``/``std``/``modality`` for that input. Non-RGB inputs use
            mean 0.5 and the mean of the RGB stds for every channel (TSN/TSM flow images).
        """
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if modality is None:
            modality = "rgb" if in_channels == 3 else "flow"
        if in_channels == self.in_channels:
            return dataclasses.replace(self, modality=modality)
        std = sum(self.std) / len(self.std)
        return dataclasses.replace(
            self,
            mean=(NON_RGB_MEAN,) * in_channels,
            std=(std,) * in_channels,
            modality=modality,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the store's attrs)."""
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneInfo:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "mean": tuple(data["mean"]), "std": tuple(data["std"])})


class Backbone(nn.Module, abc.ABC):
    """Common interface of every backbone.

    The trunk's modules are attributes of the backbone itself, named as in torchvision
    (``conv1``, ``layer1``, ``stem``, ...), so ``state_dict()`` has torchvision's layout and
    a torchvision checkpoint loads directly. The optional classifier is ``dropout`` + ``fc``
    (``fc.weight``/``fc.bias``, as in torchvision).

    Subclasses set :attr:`stage_names` and implement :meth:`forward_features`.

    Attributes:
        info: what the backbone expects and returns.
        weights_sha256: sha256 of the checkpoint loaded by :func:`get_backbone`, or None
            when randomly initialised.
        weights_record: what :func:`get_backbone` loaded, for the feature set's attrs:
            ``{"name": "random"}``, ``{"name": "file", "source": "local file", "sha256"}``
            or a named weight's ``{"name", "source" (URL), "sha256", "dataset"}`` (a family's
            hub file: ``{"name": TAG, "source": "hf-hub:REPO/FILE", "sha256"}``).
        fc: the classifier ``Linear(D, num_classes)``, or None without ``num_classes``.
    """

    #: Trunk module names grouped into stages, in forward order (stem first).
    stage_names: tuple[tuple[str, ...], ...] = ()

    def __init__(
        self,
        info: BackboneInfo,
        trunk: Mapping[str, nn.Module],
        *,
        num_classes: int | None = None,
        dropout: float = 0.5,
    ) -> None:
        """Adopt the trunk modules, add the head, adapt the first conv to the input channels.

        Args:
            info: the record; ``info.in_channels`` != 3 rebuilds the first conv with
                :func:`adapt_first_conv` (trunks are always built for RGB).
            trunk: modules by name, in forward order, built for 3 input channels.
            num_classes: size of the classifier; None for a features-only backbone.
            dropout: dropout probability before ``fc``.
        """
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be positive or None, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.info = info
        for name, module in trunk.items():
            self.add_module(name, module)
        self.dropout = nn.Dropout(dropout)
        self.fc: nn.Linear | None = None
        if num_classes is not None:
            self.fc = nn.Linear(info.feature_dim, num_classes)
            nn.init.normal_(self.fc.weight, 0.0, 0.01)
            nn.init.zeros_(self.fc.bias)
        if info.in_channels != 3:
            adapt_first_conv(self, info.in_channels)
        self.weights_sha256: str | None = None
        self.weights_record: dict[str, Any] = {"name": RANDOM}

    @property
    def input_channels(self) -> int:
        """Channels of the input ``x`` (3 for RGB, 2 for a flow pair, ...)."""
        return self.info.in_channels

    @property
    def num_classes(self) -> int | None:
        """Size of the classifier, or None for a features-only backbone."""
        return None if self.fc is None else self.fc.out_features

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error unless ``x`` is ``(B, C, T, H, W)`` with this model's C."""
        if x.ndim != 5 or x.shape[1] != self.input_channels:
            raise ValueError(
                f"{self.info.name} expects (B, {self.input_channels}, T, H, W) clips, got shape "
                f"{tuple(x.shape)}; add a time axis with x.unsqueeze(2) for single frames"
            )

    @abc.abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """Clip features.

        Args:
            x: ``(B, C, T, H, W)`` normalised clips.

        Returns:
            ``(B, D)`` features, ``D = info.feature_dim``.
        """

    def forward_head(self, features: Tensor) -> Tensor:
        """Classifier logits ``(B, num_classes)``; the features unchanged without a classifier."""
        if self.fc is None:
            return features
        return self.fc(self.dropout(features))  # (B, D) -> (B, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``forward_head(forward_features(x))``: logits, or features without a classifier."""
        return self.forward_head(self.forward_features(x))

    def stages(self) -> list[nn.Module]:
        """Stages in forward order: stem, layer1..layer4, then the head if there is one.

        Training freezes all but the last k of them. A stage of several modules (the 2D
        stem: conv1, bn1, relu, maxpool) is an ``nn.Sequential`` view sharing the modules.
        """
        out: list[nn.Module] = []
        for names in self.stage_names:
            modules = [self.get_submodule(n) for n in names]
            out.append(modules[0] if len(modules) == 1 else nn.Sequential(*modules))
        if self.fc is not None:
            out.append(nn.Sequential(self.dropout, self.fc))
        return out


BackboneBuilder = Callable[..., Backbone]
_BACKBONES: dict[str, BackboneBuilder] = {}
#: A family builder takes the name after ``PREFIX/`` and ``get_backbone``'s keywords
#: (``weights``, ``in_channels``, ``num_classes``, extras) and loads its weights itself.
FamilyBuilder = Callable[..., Backbone]
_FAMILIES: dict[str, FamilyBuilder] = {}
#: Per family: a function listing some of its well-known weights (rows for --list-backbones).
_LISTED: dict[str, Callable[[], list[dict[str, Any]]]] = {}
FAMILY_SEP = "/"


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Register a builder under ``name``.

    A builder takes keyword arguments ``in_channels``, ``num_classes`` (and its own extras)
    and returns a randomly initialised :class:`Backbone`.

    Raises:
        ValueError: when ``name`` is already registered.
    """

    def wrap(builder: BackboneBuilder) -> BackboneBuilder:
        if name in _BACKBONES:
            raise ValueError(
                f"a backbone named {name!r} is already registered "
                f"(by {_BACKBONES[name].__module__}); pick another name"
            )
        _BACKBONES[name] = builder
        return builder

    return wrap


def register_backbone_family(
    prefix: str, builder: FamilyBuilder, listed: Callable[[], list[dict[str, Any]]] | None = None
) -> FamilyBuilder:
    """Register a family of externally defined backbones under ``PREFIX/``.

    ``get_backbone("PREFIX/rest", weights=..., **kw)`` calls ``builder("rest", weights=...,
    **kw)``; the builder resolves ``rest`` (a timm model name, an open_clip architecture),
    loads the weights (``None`` = the family's default pretrained weights, ``"random"`` = a
    random init, else a local path) and sets ``weights_sha256`` / ``weights_record``.
    ``listed`` returns a few of the family's well-known weights for :func:`list_family_weights`.

    Raises:
        ValueError: an empty prefix, one holding ``/``, or one already registered.
    """
    if not prefix or FAMILY_SEP in prefix:
        raise ValueError(f"a backbone family prefix is a non-empty name without '/', got {prefix!r}")
    if prefix in _FAMILIES:
        raise ValueError(
            f"a backbone family {prefix!r} is already registered (by {_FAMILIES[prefix].__module__})"
        )
    _FAMILIES[prefix] = builder
    if listed is not None:
        _LISTED[prefix] = listed
    return builder


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(_BACKBONES)


def list_backbone_families() -> list[str]:
    """Registered family prefixes, sorted (``["clip", "timm"]``): names ``PREFIX/...``."""
    return sorted(_FAMILIES)


def list_family_weights() -> list[dict[str, Any]]:
    """Well-known weights of every family, one dict each: ``backbone`` (as written after
    ``--backbone``), ``weights`` (the ``@`` part, ``""`` when the name holds it), ``dataset``,
    ``feature_dim``, ``clip_len``, ``crop``, ``cached`` (already in the local cache),
    ``source``. Examples, not the whole family: any timm model or open_clip tag works."""
    return [row for prefix in sorted(_LISTED) for row in _LISTED[prefix]()]


def _available() -> str:
    """The names a user may write, for error messages."""
    families = ", ".join(f"{p}/NAME" for p in list_backbone_families())
    return ", ".join(list_backbones()) + (f"; families: {families}" if families else "")


def get_backbone(
    name: str,
    *,
    weights: str | os.PathLike[str] | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> Backbone:
    """Build a registered backbone: random, from named pretrained weights or from a local file.

    Args:
        name: a name from :func:`list_backbones`, or ``PREFIX/NAME`` of a family from
            :func:`list_backbone_families` (``timm/convnext_tiny.fb_in22k``,
            ``clip/ViT-B-32``), whose builder resolves ``weights`` itself (None or
            ``"default"``: its default pretrained weights, ``"random"``, a tag, a path).
        weights: what to load, resolved by :func:`extract.backbones.pretrained.resolve_weights`:
            a named weight of the backbone (``"kinetics400"``, ``"KINETICS400_V1"``,
            ``"torchvision:KINETICS400_V1"``; downloaded into torch.hub's cache on first
            use), ``"default"`` (the backbone's default weight, an error if it has none),
            ``"random"`` (random init, said explicitly), or a local checkpoint path
            (torchvision layout, or a checkpoint dict with a ``"model"``/``"state_dict"``
            entry; read with ``weights_only=True``; a public checkpoint in its source layout is
            converted first, :func:`extract.backbones.converters.converter_for`). None, the
            library default, is a random
            init as in torchvision (``weights=None``) and logs a warning saying so; the
            commands never pass None (a ``--backbone`` without ``@`` means ``default``).
        in_channels: input channels; None takes the builder's own (3 for video, 1 for
            audio). Another count adapts the first conv (cross-modality init), also when
            loading an RGB checkpoint.
        num_classes: add a dropout + ``fc`` classifier of this size (for training); a
            checkpoint's classifier of another size is skipped (it keeps a fresh init).
        progress: show a progress bar while downloading.
        **kwargs: builder options (``dropout``, ``modality``, ``clip_len``, ``shift_div``...).

    Returns:
        The backbone, in training mode as built (call ``.eval()`` for extraction). Its
        ``weights_sha256`` is the loaded file's sha256 (None for a random init), its
        ``weights_record`` what the feature set's attrs record about the weights.

    Raises:
        SettingsError: unknown name.
        WeightsError: unknown weights, a failed download, a checksum that differs, or a
            checkpoint that cannot be read or does not fit the backbone.
    """
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    prefix, sep, rest = name.partition(FAMILY_SEP)
    if sep:
        if prefix not in _FAMILIES:
            raise SettingsError(f"unknown backbone family {prefix!r} in {name!r}; available: {_available()}")
        if not rest:
            raise SettingsError(f"backbone {name!r}: name a model after '{prefix}/'")
        return _FAMILIES[prefix](rest, weights=weights, num_classes=num_classes, **kwargs)
    if name not in _BACKBONES:
        raise SettingsError(
            f"unknown backbone {name!r}; available: {_available()} "
            "(or register one with @register_backbone)"
        )
    choice = resolve_weights(name, weights)
    if isinstance(choice, PretrainedWeights):
        path = choice.fetch(progress=progress)  # before building: a failed download costs nothing
    model = _BACKBONES[name](num_classes=num_classes, **kwargs)
    if choice is None:
        logger.warning(
            "backbone %s is randomly initialised (weights=None): its features carry no pretrained "
            "knowledge; pass weights='random' to say so, or a named weight (%s) or a file",
            name,
            weights_help(name),
        )
    if choice is None or choice == RANDOM:
        model.weights_record = {"name": RANDOM}
    elif isinstance(choice, PretrainedWeights):
        digest = choice.check_file(path)
        model.weights_sha256 = load_weights(model, path, convert=choice.converter, sha256=digest,
                                            keep_init=choice.keep_init)
        model.weights_record = choice.record(digest)
        logger.info("backbone %s loaded %s from %s (sha256 %s)", name, choice.full_name, path, digest)
    else:
        model.weights_sha256 = load_weights(model, choice, convert=converter_for(name))
        model.weights_record = {"name": "file", "source": "local file", "sha256": model.weights_sha256}
        logger.info("backbone %s loaded %s (sha256 %s)", name, choice, model.weights_sha256)
    return model
