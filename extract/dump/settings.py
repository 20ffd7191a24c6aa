"""``ExtractSettings``: everything one ``extract.run`` needs besides the video list and store.

Two kinds of fields live here:

* **What the features are** (recorded in the feature set's spec; a rerun on the same
  ``--set`` with other values is refused by the store): the backbones (``backbone``,
  ``modality``, ``weights`` for one; ``backbones`` for several), ``seed`` (random init
  only), the clip sampling (``sampling``, ``clips``, ``frames``, ``stride``; time-based:
  ``every``, ``fps``, ``max_clips``), the views
  (``short_side``, ``crop``, ``crops``, ``scales``), the flow (``flow_algorithm``,
  ``flow_bound``, ``flow_preset``, ``flow_params``), the precision (``amp``, ``amp_dtype``), ``head_logits``
  ``chunk_rows`` and the ``decoder`` (``pyav`` or ``torchcodec``: their resized frames differ slightly).
* **How the run goes** (free to change between a run and its resume): ``set_name``,
  ``device``, ``batch_size``, ``workers``, ``threads``, ``max_memory_gb``, ``timeout_s``, ``flush_s``,
  ``retry_errors``, ``limit``, ``shard``.

One run fills one feature set per :class:`BackboneChoice` (:meth:`ExtractSettings.choices`)
from a single decode of each video: ``ExtractSettings(backbone="r2plus1d_18")`` is one RGB
set; ``ExtractSettings(backbones=(BackboneChoice("resnet18"), BackboneChoice("resnet18",
"flow"), BackboneChoice("vggish", "audio")))`` is three.

Fields left ``None`` are resolved from the backbone (:meth:`ExtractSettings.clip_sampling`,
:meth:`ExtractSettings.view_spec`) or from the measured work (``workers``, ``threads``: the
run measures decode and model cost on its first videos and fits them, the batch size and the
decode queue to the free cores and ``max_memory_gb``; :mod:`extract.dump.resources`).

The fixed rule below (:func:`default_parallelism`) is what a run falls back on when nothing
could be measured (every first video failed), and what store creation uses to probe headers.

Default parallelism, measured with ``python -m benchmarks.run --only extract`` on the 2-core
CPU machines (shared with other jobs, so the figures move): one decode worker makes ~250
model inputs per second from the 112 px demo videos (8 TSN frames per video), while
ResNet-18 at 112 px runs 28-60 clips/s per core, so the model is the bottleneck and one
worker feeds about four model threads. Oversubscribing the cores is the costly mistake:
pipeline clips/s for 40 videos with (workers, threads) = (1, 1) 28.7, (2, 1) 25.8,
(1, 2) 17.3, (0, 2) 17.2 -- torch's OpenMP threads stall when a core is taken. Hence on a
CPU ``workers = max(1, cores // 4)`` and ``threads = max(1, cores - workers)``. Larger
videos decode slower (~2,000 frames/s for the 112 px demo, ~1,160 at 640x272 and ~300 at
1280x720 per core, see DESIGN.md): raise ``--workers`` for them. On a GPU the model
outruns one core's decoding by far, so every core but one decodes:
``workers = max(1, cores - 1)``, ``threads = 1``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from extract.backbones import BackboneInfo
from extract.errors import ExtractError
from extract.media.decode import DECODERS
from extract.media.flow import FLOW_CHOICES, FlowSettings, paper_flow
from extract.media.sampling import EVERY, SAMPLING_MODES, ClipSampling, ViewSpec
from store.cli import setting_name
from store.errors import SettingsError
from store.threads import free_cores

DEVICES = ("auto", "cpu", "cuda")
AMP_DTYPES = ("float16", "bfloat16")
#: What a backbone of a run looks at; K per video is clips x views (rgb, flow) or clips (audio).
MODALITIES = ("rgb", "flow", "audio")
_SET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: K-max of a time-based set (``--every``) that neither ``--max-clips`` nor an existing set
#: fixes: the clips of the run's longest video, at most this many (a row of the set costs
#: ``K x D x 2`` bytes on disk and in every read, valid or not; see extract/README.md).
AUTO_MAX_CLIPS = 128
#: The most clips a time-based set may keep per video (``--max-clips``): 4096 x 2048 dims x
#: 2 bytes is 16 MiB per row, 4 GiB per 256-row chunk.
MAX_CLIPS_LIMIT = 4096


def default_parallelism(device: str, cores: int | None = None) -> tuple[int, int]:
    """``(decode workers, model threads)`` for a device (``"cpu"`` or ``"cuda"``).

    See the module docstring for the measurements behind the rule. ``cores`` defaults to the
    free cores (:func:`store.threads.free_cores`): never more threads than there are idle cores.
    """
    cores = free_cores() if cores is None else cores
    if device == "cuda":
        return max(1, cores - 1), 1
    workers = max(1, cores // 4)
    return workers, max(1, cores - workers)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ValueError with a usable message otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise SettingsError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


#: extract.run's flags whose name is not ``--`` + the field with dashes.
_FLAGS = {"timeout_s": "--timeout", "flush_s": "--flush-every", "max_memory_gb": "--max-memory"}


def _positive_int(name: str, value: Any, *, allow_none: bool = False, low: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SettingsError(f"{setting_name(name, _FLAGS.get(name))} must be a whole number >= {low}, "
                         f"got {value!r}")


def _check_set_name(name: str | None) -> None:
    if name is not None and not _SET_NAME.match(name):
        raise SettingsError(f"--set {name!r}: use letters, digits, '_', '-', '.' (not leading)")


def set_name_for(modality: str, backbone: str) -> str:
    """The default feature set name ``<modality>_<backbone>``, e.g. ``flow_resnet18``; a
    family's ``/`` becomes ``_`` (``rgb_timm_convnext_tiny.fb_in22k``)."""
    return f"{modality}_{backbone.replace('/', '_')}"


@dataclass(frozen=True)
class BackboneChoice:
    """One feature set of a run: a backbone, the modality it looks at, its weights, its name.

    Attributes:
        backbone: registered backbone name, or ``PREFIX/NAME`` of a family (``timm/...``,
            ``clip/...``). ``rgb`` and ``flow`` take a video backbone (frame or clip; a flow
            one is built with 2 input channels), ``audio`` an audio backbone
            (``resnet18_audio``, ``vggish``, ``envnet_v2``, ...).
        modality: ``rgb``, ``flow`` or ``audio``.
        weights: what ``@WEIGHTS`` said: a named weight of the backbone (``kinetics400``,
            ``KINETICS400_V1``, ``torchvision:KINETICS400_V1``; a family's tag:
            ``clip/ViT-B-32@openai``), ``random`` (random init from the run's seed), or a
            local checkpoint path; see :func:`extract.backbones.pretrained.resolve_weights`.
            None = the backbone's default weights (an error listing its weights if it has none).
        set_name: feature set name; None = ``"<modality>_<backbone>"``.
    """

    backbone: str
    modality: str = "rgb"
    weights: str | None = None
    set_name: str | None = None

    def __post_init__(self) -> None:
        if not self.backbone:
            raise SettingsError("a backbone choice must name a registered backbone")
        if self.modality not in MODALITIES:
            raise SettingsError(
                f"modality must be one of {MODALITIES}, got {self.modality!r} "
                f"(--backbone MODALITY:NAME, e.g. flow:resnet18)"
            )
        _check_set_name(self.set_name)

    @property
    def default_set_name(self) -> str:
        """``<modality>_<backbone>``, e.g. ``flow_resnet18`` (:func:`set_name_for`)."""
        return set_name_for(self.modality, self.backbone)

    @classmethod
    def parse(
        cls, text: str, *, modality: str = "rgb", set_name: str | None = None
    ) -> BackboneChoice:
        """``[MODALITY:]NAME[@WEIGHTS]`` (the ``--backbone`` syntax) -> a choice.

        ``modality`` is used when the text has no ``rgb:``/``flow:``/``audio:`` prefix.
        Everything after the first ``@`` is the weights (see :attr:`weights`), so
        ``r2plus1d_18@torchvision:KINETICS400_V1`` keeps its ``:``. Examples:
        ``r2plus1d_18`` (default weights), ``rgb:r2plus1d_18@kinetics400``, ``flow:resnet18@random``,
        ``audio:vggish@vggish.pt``, ``timm/convnext_tiny.fb_in22k``, ``clip/ViT-B-32@laion2b_s34b_b79k``.
        """
        text = str(text).strip()
        head, colon, rest = text.partition(":")
        if colon and head in MODALITIES:
            modality, text = head, rest
        elif colon and "@" not in head:  # else the ':' belongs to the weights (@torchvision:NAME)
            raise SettingsError(
                f"--backbone {text!r}: the part before ':' must be one of {MODALITIES} "
                "(MODALITY:NAME[@WEIGHTS])"
            )
        name, at, weights = text.partition("@")
        if at and not weights:
            raise SettingsError(
                f"--backbone {text!r}: give the weights after '@' (a named weight, random or a file path)"
            )
        return cls(name.strip(), modality, weights or None, set_name)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneChoice:
        return cls(**d)


@dataclass(frozen=True)
class ExtractSettings:
    """Settings of one feature dump (see the module docstring for which fields matter where).

    Attributes:
        backbone: registered backbone name (``extract.backbones.list_backbones()``) of a
            one-backbone run.
        weights: the one backbone's weights, as :attr:`BackboneChoice.weights` (a named
            weight, ``random``, a path; None = the backbone's default weights).
        seed: torch seed of the random init (every shard and resume builds the same model).
        set_name: feature set name; None = ``"<modality>_<backbone>"``.
        modality: ``rgb``, ``flow`` or ``audio``: what ``backbone`` looks at.
        backbones: several feature sets from one decode per video; when given it replaces
            ``backbone``/``modality``/``weights``/``set_name`` (leave those at their
            defaults).
        sampling: ``uniform``, ``tsn`` or ``dense``; None = ``tsn`` for frame models,
            ``uniform`` for clip models.
        clips: N, clips per video (TSN segments); not used with ``every``.
        frames: T, frames per clip; None = the backbone's ``clip_len``.
        stride: frame step inside a clip.
        every: time-based clips: one starting every this many seconds (``--every``); a clip
            that would run past the end of the video is dropped (see
            :mod:`extract.media.sampling`). None: ``clips`` clips per video.
        fps: take the clips' frames at this rate, resampled from the video's (None: its own).
        max_clips: K-max of ``every``, the most clips a video keeps (more are evenly
            thinned); None: ``extract()`` fixes it when the set is created (the existing
            set's, else the longest video's clip count up to :data:`AUTO_MAX_CLIPS`), and
            ``clip_sampling`` uses :data:`AUTO_MAX_CLIPS`.
        short_side: resize target; None = ``round(crop * 8 / 7)`` (128 for 112, 256 for 224).
        crop: square crop side; None = the backbone's ``input_size``.
        crops: ``center``, ``three``, ``five`` or ``ten`` crop positions.
        scales: extra short sides for multi-scale views.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        amp: mixed precision; None = on for CUDA, off on CPU.
        amp_dtype: the autocast type on CUDA: ``float16`` or ``bfloat16`` (Ampere and newer).
        batch_size: the most clips per model batch, gathered across videos (the memory
            budget may take fewer).
        workers: decode processes (0 = decode in the main process, between batches, no hard
            timeout); None = fitted to the measured work (:mod:`extract.dump.resources`).
        threads: torch threads of the model; None = fitted to the measured work.
        max_memory_gb: memory budget of the run's processes together, in GB (2**30 bytes):
            the model batch, the queue of decoded videos and the decode processes are sized
            to it.
        timeout_s: per-video decode time limit; a worker past it (plus a grace period) is
            killed and replaced, and the row gets a "decode timed out" error.
        chunk_rows: rows per storage chunk of a new feature set.
        flush_s: write finished rows at least this often (seconds), whole chunks or not.
        retry_errors: also process rows that failed in an earlier run.
        limit: process at most this many pending rows (smoke tests).
        shard: ``(i, n)``: fill only the i-th of n chunk-aligned row ranges.
        flow_algorithm: ``farneback`` (CPU default), ``tvl1``, ``raft_small``, ``raft_large``,
            or ``paper`` (:func:`extract.media.flow.paper_flow`: TV-L1 fast on a CPU, full
            TV-L1 or RAFT-large on a GPU), for flow backbones.
        flow_bound: flows are clipped to +-bound pixels per frame, then divided by it.
        flow_preset: ``default`` or ``fast`` TV-L1 parameters (``tvl1`` only).
        flow_params: ``(FlowSettings field, value)`` pairs over the preset, e.g.
            ``(("tvl1_warps", 2),)`` (``--tvl1-warps 2``).
        head_logits: also keep each backbone's classifier scores (needs ``weights`` with a
            classifier ``fc`` for the store's classes): a ``<set>__logits`` feature set
            during the run, a ``<set>_logits`` prediction run at its end.
        decoder: ``pyav`` (default) or ``torchcodec`` (where installed; checked when the
            producers are built): the library every video is decoded with.
    """

    backbone: str = "resnet18"
    weights: str | None = None
    seed: int = 0
    set_name: str | None = None
    sampling: str | None = None
    clips: int = 8
    frames: int | None = None
    stride: int = 1
    short_side: int | None = None
    crop: int | None = None
    crops: str = "center"
    scales: tuple[int, ...] = ()
    device: str = "auto"
    amp: bool | None = None
    amp_dtype: str = "float16"
    batch_size: int = 64
    workers: int | None = None
    threads: int | None = None
    max_memory_gb: float = 2.0
    timeout_s: float = 120.0
    chunk_rows: int = 256
    flush_s: float = 60.0
    retry_errors: bool = False
    limit: int | None = None
    shard: tuple[int, int] | None = None
    modality: str = "rgb"
    backbones: tuple[BackboneChoice, ...] = ()
    flow_algorithm: str = "farneback"
    flow_bound: float = 20.0
    flow_preset: str = "default"
    flow_params: tuple[tuple[str, float], ...] = ()
    head_logits: bool = False
    every: float | None = None
    fps: float | None = None
    max_clips: int | None = None
    decoder: str = "pyav"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", tuple(self.scales))
        object.__setattr__(
            self,
            "backbones",
            tuple(
                b if isinstance(b, BackboneChoice) else BackboneChoice.from_dict(b)
                for b in self.backbones
            ),
        )
        if self.shard is not None:
            object.__setattr__(self, "shard", tuple(self.shard))
            if len(self.shard) != 2 or not 0 <= self.shard[0] < self.shard[1]:
                raise SettingsError(
                    f"{setting_name('shard')} must be i/n with 0 <= i < n, got {self.shard}"
                )
        if not self.backbone:
            raise SettingsError(f"{setting_name('backbone')} must name a registered backbone")
        _check_set_name(self.set_name)
        if self.backbones and (self.weights or self.set_name or self.modality != "rgb"):
            raise SettingsError(
                "give the backbones either as --backbone NAME with --modality/--weights/--set (one "
                "feature set) or as several --backbone MODALITY:NAME@WEIGHTS (in a --config file: "
                "backbone = [...]), not both"
            )
        BackboneChoice(self.backbone, self.modality)  # checks the modality
        names = [c.set_name or c.default_set_name for c in self.choices()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SettingsError(
                f"two backbones of the run would write the feature set {twice[0]!r}; "
                "give each its own name with --set (one per --backbone, in order)"
            )
        if self.flow_algorithm not in FLOW_CHOICES:
            raise SettingsError(f"--flow must be one of {FLOW_CHOICES}, got {self.flow_algorithm!r}")
        if not float(self.flow_bound) > 0:
            raise SettingsError(f"--flow-bound must be > 0 pixels per frame, got {self.flow_bound!r}")
        object.__setattr__(self, "flow_params", tuple(sorted((str(k), v) for k, v in self.flow_params)))
        if self.flow_algorithm == "paper" and self.flow_preset != "default":
            raise SettingsError("--flow paper picks the TV-L1 preset itself; drop --flow-preset")
        self.flow_settings("cpu")  # checks the preset and parameters
        if self.sampling is not None and self.sampling not in SAMPLING_MODES:
            raise SettingsError(f"--sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        self._check_time_sampling()
        if self.decoder not in DECODERS:
            raise SettingsError(f"--decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.amp_dtype not in AMP_DTYPES:
            raise SettingsError(f"--amp-dtype must be one of {AMP_DTYPES}, got {self.amp_dtype!r}")
        if self.device not in DEVICES:
            raise SettingsError(f"--device must be one of {DEVICES}, got {self.device!r}")
        for name in ("clips", "stride", "batch_size", "chunk_rows"):
            _positive_int(name, getattr(self, name))
        for name in ("frames", "short_side", "crop", "threads", "limit"):
            _positive_int(name, getattr(self, name), allow_none=True)
        _positive_int("workers", self.workers, allow_none=True, low=0)
        _positive_int("seed", self.seed, low=0)
        for name, unit in (("timeout_s", "seconds"), ("flush_s", "seconds"), ("max_memory_gb", "GB")):
            if not float(getattr(self, name)) > 0:
                raise SettingsError(
                    f"{setting_name(name, _FLAGS.get(name))} must be > 0 {unit}, "
                    f"got {getattr(self, name)!r}"
                )

    def _check_time_sampling(self) -> None:
        for name, what in (("every", "seconds"), ("fps", "frames per second")):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or not value > 0):
                raise SettingsError(f"{setting_name(name)} must be a number of {what} > 0, got {value!r}")
        _positive_int("max_clips", self.max_clips, allow_none=True)
        if self.max_clips is not None and self.every is None:
            raise SettingsError("--max-clips caps the time-based clips of --every SECONDS; a fixed number of "
                                "clips per video is --clips N")
        if self.every is not None and self.sampling is not None:
            raise SettingsError(f"--sampling {self.sampling} places a fixed number of clips (--clips) and --every "
                                "a clip every N seconds; give one of them")
        if self.max_clips is not None and self.max_clips > MAX_CLIPS_LIMIT:
            raise SettingsError(f"--max-clips {self.max_clips} is above the limit of {MAX_CLIPS_LIMIT} clips per "
                                "video (every row stores K-max x D float16 values); use a larger --every")

    # ------------------------------------------------------------------ resolution
    def choices(self) -> tuple[BackboneChoice, ...]:
        """The feature sets of the run, in order (``backbones``, or the one backbone)."""
        if self.backbones:
            return self.backbones
        return (BackboneChoice(self.backbone, self.modality, self.weights, self.set_name),)

    def clip_sampling(self, info: BackboneInfo | None) -> ClipSampling:
        """The clip sampling for this backbone (fills ``sampling`` and ``frames``); ``None``
        for a run without a video backbone: ``sampling or "tsn"`` with ``frames or 1`` frames
        (the timeline of the default TSN RGB set)."""
        frames = self.frames or (info.clip_len if info is not None else 1)
        if self.every is not None:
            return ClipSampling(mode=EVERY, num_clips=self.max_clips or AUTO_MAX_CLIPS, frames_per_clip=frames,
                                stride=self.stride, every_s=self.every, fps=self.fps)
        mode = self.sampling or ("tsn" if info is None or info.kind == "frame2d" else "uniform")
        return ClipSampling(
            mode=mode, num_clips=self.clips, frames_per_clip=frames, stride=self.stride, fps=self.fps
        )

    def view_spec(self, info: BackboneInfo) -> ViewSpec:
        """The spatial views for this backbone (fills ``crop`` and ``short_side``)."""
        crop = self.crop or info.input_size
        short = self.short_side or max(crop, round(crop * 8 / 7))
        return ViewSpec(short_side=short, crop=crop, crops=self.crops, scales=self.scales)

    def resolved_device(self) -> str:
        """``cpu`` or ``cuda`` (``auto`` picks CUDA when torch sees a GPU)."""
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ExtractError(
                "--device cuda was asked for but torch sees no CUDA GPU; use --device cpu"
            )
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def parallelism(self, device: str) -> tuple[int, int]:
        """``(workers, threads)``: the fields where set, else :func:`default_parallelism`."""
        workers, threads = default_parallelism(device)
        if self.workers is not None:
            workers = self.workers
            if self.threads is None:
                threads = max(1, free_cores() - workers) if device == "cpu" else 1
        return workers, self.threads or threads

    def flow_settings(self, device: str, size: int | None = None) -> tuple[FlowSettings, str | None]:
        """The flow of the run on ``device`` (``cpu``/``cuda``), and why when ``paper`` chose it.

        Raises:
            SettingsError: a preset or ``--tvl1-*`` value that does not fit the algorithm.
        """
        algorithm, preset, why = self.flow_algorithm, self.flow_preset, None
        if algorithm == "paper":
            algorithm, preset, why = paper_flow(device)
        params = dict(self.flow_params)
        if algorithm != "tvl1" and any(k.startswith("tvl1_") for k in params):
            raise SettingsError(f"--tvl1-* parameters are for --flow tvl1, not {algorithm}")
        try:
            flow = FlowSettings(algorithm=algorithm, bound=float(self.flow_bound), size=size, preset=preset, **params)
        except (TypeError, ValueError) as err:
            raise SettingsError(f"flow settings: {err}") from None
        return flow, why

    def use_amp(self, device: str) -> bool:
        return (device == "cuda") if self.amp is None else bool(self.amp and device == "cuda")

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        d["shard"] = list(self.shard) if self.shard else None
        d["backbones"] = [b.to_dict() for b in self.backbones]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExtractSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SettingsError(
                f"ExtractSettings.from_dict: unknown keys {unknown}; expected a subset of {sorted(known)}"
            )
        d = dict(d)
        if d.get("scales") is not None:
            d["scales"] = tuple(d["scales"])
        if d.get("shard") is not None:
            d["shard"] = tuple(d["shard"])
        if d.get("backbones"):
            d["backbones"] = tuple(BackboneChoice.from_dict(b) for b in d["backbones"])
        if d.get("flow_params"):
            d["flow_params"] = tuple(tuple(p) for p in d["flow_params"])
        return cls(**d)
