"""``TrainRecipe``: every choice of a backbone training run, as one frozen, serialisable record.

The recipes of the Moments-in-Time challenge reports are flags of this record: the loss
(BCE, scaled BCE, focal, focal + label correlation, LSEP from :mod:`heads.losses`) and its
class weights, SGD or AdamW, a cosine schedule with linear warm-up or cyclic (warm
restarts), SWA over the last epochs, mixup / between-class learning, dropout, random
short-side resize + crop + flip, and fine-tuning only the last k stages.

Fields left ``None`` depend on the backbone; :meth:`TrainRecipe.resolve` fills them from its
:class:`~extract.backbones.BackboneInfo` with the same rules as ``extract.run``
(:class:`~extract.dump.settings.ExtractSettings`), so the evaluation clips of training are the
clips ``extract.run`` later embeds with the same ``--crop/--frames/--stride`` flags. The
resolved recipe is written next to the results as ``recipe.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from extract.backbones import BackboneInfo
from extract.dump.settings import DEVICES, ExtractSettings
from extract.media.flow import FLOW_CHOICES
from heads.schedule import LRSchedule
from store.cli import setting_name
from store.errors import SettingsError

MODALITIES = ("rgb", "flow", "audio")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "cyclic")
CLASS_WEIGHTS = ("none", "sqrt", "linear")
#: Fields that may differ between a run and its resume (they do not change the result on
#: a CPU; ``device`` moves the run, which is the point of allowing it).
RESUMABLE_CHANGES = ("device",)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainRecipe:
    """How a backbone is trained (see the module docstring and ``extract/README_train.md``).

    Attributes:
        backbone: registered backbone name (``extract.backbones.list_backbones()``).
        modality: ``rgb``, ``flow`` (2-channel flow stacks) or ``audio`` (an audio backbone).
        weights: initial weights, as after ``--backbone NAME@``: a named weight of the backbone
            (``kinetics400``; its classifier is replaced by one for the store's classes),
            ``random`` (random init from ``seed``) or a local checkpoint; None = the
            backbone's default weights (an error listing its weights if it has none).
        loss: a loss of ``heads.losses`` (``bce``, ``scaled_bce``, ``focal``, ``focal_lc``, ``lsep``...).
        loss_kwargs: keyword arguments of the loss (e.g. ``{"gamma": 2.0}`` for focal).
        class_weights: per-class loss weights from train label counts: ``none``, ``sqrt``
            (``1/sqrt(n_c)``) or ``linear`` (``1/n_c``), normalised to mean 1.
        optimizer: ``sgd`` (with momentum, Nesterov) or ``adamw``.
        lr: peak learning rate.
        momentum: SGD momentum (AdamW: beta1).
        weight_decay: decay of conv/linear weights (biases and norm layers get none).
        schedule: ``cosine`` (one cosine from ``lr`` to ``lr * min_lr_ratio`` after warm-up) or
            ``cyclic`` (cosine cycles of ``cycle_epochs`` epochs, restarting at ``lr``).
        warmup_epochs: linear warm-up from 0 to ``lr`` (may be fractional; 0 = none; a warm-up
            as long as the run never decays).
        cycle_epochs: cycle length of the ``cyclic`` schedule.
        min_lr_ratio: the lowest learning rate as a fraction of ``lr``.
        epochs: passes over the training videos.
        batch_size: clips per step.
        grad_clip: clip the gradient norm to this value (0 = off).
        swa_epochs: average the weights of the last n epochs (0 = no SWA).
        swa_lr: constant learning rate during the SWA epochs (None = keep the schedule).
        mixup_alpha: between-class mixing: ``x = r x1 + (1 - r) x2``, ``y = r y1 + (1 - r) y2``
            with ``r ~ Beta(alpha, alpha)`` per pair (0 = off).
        dropout: dropout before the classifier.
        crop: square crop side (None = the backbone's input size).
        short_side: evaluation resize before the centre crop (None = ``round(crop * 8 / 7)``,
            as ``extract.run``).
        scale: training short side = ``short_side`` x a uniform draw in this range (at
            least ``crop``); the crop position is uniform.
        flip: random horizontal flips in training (flow: x changes sign). Off by default:
            a mirrored clip turns "moves right" into "moves left" (and clockwise into
            anticlockwise) without changing its labels; turn it on only for label sets
            that are mirror-invariant.
        train_stages: fine-tune only the last k stages (the classifier counts as one);
            0 = train everything.
        frames: frames per clip (None = the backbone's clip length).
        stride: frame step inside a clip.
        train_segments: random clips per training example, their frames joined on the
            time axis (TSN consensus; frame models only). None = 3 for frame models, else 1.
        eval_clips: deterministic clips per validation video; scores are averaged (not used
            with ``every``).
        every: evaluate on time-based clips, one every this many seconds (``extract.run
            --every``), at most ``max_clips`` (None: ``AUTO_MAX_CLIPS``) per video.
        fps: take every clip's frames (training and evaluation) at this rate, resampled
            from the video's (``extract.run --fps``); None: the video's own frames.
        max_clips: the most time-based evaluation clips per video (needs ``every``).
        flow_algorithm: ``farneback``, ``tvl1``, ``raft_small``, ``raft_large`` or ``paper``
            (flow modality). Training computes flow in its CPU data workers, so ``paper`` is TV-L1
            with the ``fast`` preset here (:func:`extract.media.flow.paper_flow` on ``cpu``).
        flow_bound: flows are clipped to this many pixels per frame (flow modality).
        flow_params: ``(FlowSettings field, value)`` pairs over the algorithm's defaults, as
            ``extract.run``'s (e.g. ``(("gap", 6), ("fb_winsize", 7))``); extraction must use the same.
        decode_every: each training video is decoded once per this many epochs: one decode
            gives the clips of all of them (kept in the clip cache between epochs), at one
            random short side (``scale``) drawn per video and per such generation; clip
            positions, crops and flips stay random per epoch. 1 = decode every example
            (a new short side every epoch). Audio decodes each track once whatever the value.
        decoder: the video decoder, ``pyav`` or ``torchcodec`` (where installed;
            :func:`extract.media.decode.decode_video`): the same frames at the coded size, resized
            ones differ slightly, so it is part of the clip cache's key, as of a feature set's record.
        seed: seeds the init, the shuffles, the clip positions and the augmentations.
        device: ``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``.
        amp: float16 autocast + gradient scaling on CUDA (never on the CPU).
    """

    backbone: str = "resnet18"
    modality: str = "rgb"
    weights: str | None = None
    loss: str = "bce"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    class_weights: str = "none"
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    cycle_epochs: int = 2
    min_lr_ratio: float = 0.0
    epochs: int = 10
    batch_size: int = 16
    grad_clip: float = 10.0
    swa_epochs: int = 0
    swa_lr: float | None = None
    mixup_alpha: float = 0.0
    dropout: float = 0.5
    crop: int | None = None
    short_side: int | None = None
    scale: tuple[float, float] = (1.0, 1.25)
    flip: bool = False
    train_stages: int = 0
    frames: int | None = None
    stride: int = 1
    train_segments: int | None = None
    eval_clips: int = 4
    every: float | None = None
    fps: float | None = None
    max_clips: int | None = None
    flow_algorithm: str = "farneback"
    flow_bound: float = 20.0
    flow_params: tuple[tuple[str, float], ...] = ()
    decode_every: int = 16
    decoder: str = "pyav"
    seed: int = 0
    device: str = "auto"
    amp: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss_kwargs", dict(self.loss_kwargs))
        object.__setattr__(self, "scale", tuple(float(s) for s in self.scale))
        object.__setattr__(self, "flow_params", tuple(sorted((str(k), v) for k, v in self.flow_params)))
        self._check_choices()
        self._check_numbers()

    def _check_choices(self) -> None:
        for name, choices in (("modality", MODALITIES), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES),
                              ("class_weights", CLASS_WEIGHTS), ("device", DEVICES),
                              ("flow_algorithm", FLOW_CHOICES)):
            if getattr(self, name) not in choices:
                raise SettingsError(f"{setting_name(name)} must be one of {choices}, got {getattr(self, name)!r}")
        if not self.backbone:
            raise SettingsError(f"{setting_name('backbone')} must name a registered backbone")
        from heads.losses import list_losses

        if self.loss not in list_losses():
            raise SettingsError(f"{setting_name('loss')} must be one of {list_losses()}, got {self.loss!r}")
        for name in ("flip", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(f"{setting_name(name)} must be true or false, got {getattr(self, name)!r}")

    def _check_numbers(self) -> None:
        for name, low, optional in (("epochs", 1, False), ("batch_size", 1, False), ("cycle_epochs", 1, False),
                                    ("stride", 1, False), ("eval_clips", 1, False), ("decode_every", 1, False),
                                    ("swa_epochs", 0, False),
                                    ("train_stages", 0, False), ("seed", 0, False), ("crop", 1, True),
                                    ("short_side", 1, True), ("frames", 1, True), ("train_segments", 1, True)):
            value = getattr(self, name)
            if not (optional and value is None) and (not _is_int(value) or value < low):
                raise SettingsError(f"{setting_name(name)} must be a whole number >= {low}, got {value!r}")
        for name in ("lr", "flow_bound"):
            if not _is_number(getattr(self, name)) or not getattr(self, name) > 0:
                raise SettingsError(f"{setting_name(name)} must be > 0, got {getattr(self, name)!r}")
        for name in ("momentum", "min_lr_ratio"):
            if not _is_number(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                raise SettingsError(f"{setting_name(name)} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 <= self.dropout < 1:
            raise SettingsError(f"{setting_name('dropout')} must be in [0, 1), got {self.dropout!r}")
        for name in ("weight_decay", "warmup_epochs", "grad_clip", "mixup_alpha"):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise SettingsError(f"{setting_name(name)} must be >= 0, got {getattr(self, name)!r}")
        if self.swa_lr is not None and not (_is_number(self.swa_lr) and self.swa_lr > 0):
            raise SettingsError(f"{setting_name('swa_lr')} must be > 0 (or left out), got {self.swa_lr!r}")
        if self.swa_epochs > self.epochs:
            raise SettingsError(f"{setting_name('swa_epochs')} ({self.swa_epochs}) cannot exceed "
                             f"{setting_name('epochs')} ({self.epochs})")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise SettingsError(f"{setting_name('scale')} must be LOW,HIGH with 0 < LOW <= HIGH, got {self.scale}")
        self.extract_settings()  # every, fps, max_clips: checked as extract.run checks them

    # ------------------------------------------------------------------ backbone-dependent values
    def extract_settings(self) -> ExtractSettings:
        """The ``extract.run`` settings whose clips and views this recipe evaluates on."""
        return ExtractSettings(backbone=self.backbone, clips=self.eval_clips, frames=self.frames,
                               stride=self.stride, crop=self.crop, short_side=self.short_side,
                               every=self.every, fps=self.fps, max_clips=self.max_clips, decoder=self.decoder,
                               flow_algorithm=self.flow_algorithm, flow_bound=self.flow_bound,
                               flow_params=self.flow_params)

    def resolve(self, info: BackboneInfo) -> TrainRecipe:
        """A copy with every ``None`` that depends on the backbone filled in.

        Raises:
            ValueError: the recipe does not fit the backbone (modality, segments).
        """
        want = {"rgb": ("frame2d", "clip3d"), "flow": ("frame2d", "clip3d"), "audio": ("audio2d", "audio1d")}
        if info.kind not in want[self.modality]:
            raise SettingsError(f"--modality {self.modality} needs a backbone of kind "
                                f"{' or '.join(want[self.modality])}; "
                             f"{info.name} is {info.kind}")
        segments = self.train_segments or (3 if info.kind == "frame2d" else 1)
        if segments > 1 and info.kind != "frame2d":
            raise SettingsError(f"{setting_name('train_segments')} {segments} joins clips on the time axis, "
                                "which only frame "
                             f"(TSN) backbones allow; {info.name} is {info.kind}: use 1")
        if self.modality == "audio":  # windows come from the backbone; no pictures to crop
            return dataclasses.replace(self, train_segments=1, frames=1, flip=False)
        settings = self.extract_settings()
        sampling, view = settings.clip_sampling(info), settings.view_spec(info)
        return dataclasses.replace(self, frames=sampling.frames_per_clip, crop=view.crop,
                                   short_side=view.short_side, train_segments=segments)

    def lr_schedule(self, steps_per_epoch: int) -> LRSchedule:
        """The learning rate of every step of this recipe's run (SWA's constant rate over the last epochs)."""
        total = self.epochs * steps_per_epoch
        swa_start = (self.epochs - self.swa_epochs) * steps_per_epoch if self.swa_epochs else None
        return LRSchedule(lr=self.lr, total_steps=total, warmup_steps=round(self.warmup_epochs * steps_per_epoch),
                          kind=self.schedule, cycle_steps=max(1, self.cycle_epochs * steps_per_epoch),
                          min_lr_ratio=self.min_lr_ratio, swa_start=swa_start, swa_lr=self.swa_lr)

    def differences(self, other: TrainRecipe) -> list[str]:
        """``"name: ours != theirs"`` for every field that differs (for resume checks)."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} != {b[k]!r}" for k in a if a[k] != b[k]]

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scale"] = list(self.scale)
        d["flow_params"] = [list(kv) for kv in self.flow_params]
        d["loss_kwargs"] = dict(self.loss_kwargs)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainRecipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SettingsError(f"TrainRecipe.from_dict: unknown keys {unknown}; expected a subset of {sorted(known)}")
        d = dict(d)
        if d.get("scale") is not None:
            d["scale"] = tuple(d["scale"])
        return cls(**d)
