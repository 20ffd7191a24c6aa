"""Per modality: a video -> a training example, a video -> its evaluation clips, a batch -> model input.

Each modality is one small class in two halves, like ``extract.dump.producers``:

* the **worker half** (numpy; runs in DataLoader worker processes) decodes only the needed
  frames with :func:`~extract.media.decode.decode_video` and the clip sampling of
  :mod:`extract.media.sampling`. A training example is made in three steps, so that one decode
  can serve the clips of several epochs (:mod:`extract.training.clip_cache`):
  :meth:`~ModalityInputs.draw_clip` draws a random clip position,
  :meth:`~ModalityInputs.decode_clips` decodes what a list of such clips needs at one drawn
  short side (frames; flow stacks; the audio track) and :meth:`~ModalityInputs.example` cuts
  one clip out of that and augments it. :meth:`ModalityInputs.eval_clips` takes deterministic
  clips, exactly the ones ``extract.run`` embeds (RGB reuses :class:`extract.dump.makers.RGBClips`);
* the **device half**, :meth:`ModalityInputs.to_model`, turns a collated batch into the
  backbone's normalised input on the GPU (uint8 travels, floats are made on the device).

=========  ===================================  ===========================================
modality   worker output (one example)          model input
=========  ===================================  ===========================================
rgb        (T, crop, crop, 3) uint8             ``to_tensor_clip``: (B, 3, T, crop, crop)
flow       (2, T, crop, crop) float32 [-1, 1]   ``normalize((x + 1) / 2)``: (B, 2, T, crop, crop)
           (float16 values, as ``extract.run``
           stores flow features' inputs)
audio      (W,) float32 waveform window         audio2d: ``log_mel`` (B, 1, F, M); audio1d: (B, 1, W)
=========  ===================================  ===========================================

Frame (TSN) backbones train on ``train_segments`` random clips per example, joined on the
time axis (the backbone averages its frame features: TSN's segment consensus).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from extract.backbones import Backbone, BackboneInfo
from extract.dump.makers import RGBClips
from extract.media.audio import AudioSettings, audio_windows, log_mel
from extract.media.decode import DecodeError, decode_video
from extract.media.flow import FlowSettings, clip_flow_stack, flow_frame_indices, flow_views
from extract.media.raft import RAFT_MODELS, raft_weights_file
from extract.media.sampling import (
    ClipSampling,
    ViewSpec,
    clip_frame_indices,
    sample_clips,
    union_frame_indices,
)
from extract.media.transforms import normalize, to_tensor_clip
from extract.training.augment import ClipAugment
from extract.training.recipe import TrainRecipe


class NoAudioTrack(DecodeError):
    kind = "no audio"
    hint = "an audio backbone cannot learn from this video; drop it from the list or ignore the warning"


@dataclass(frozen=True)
class VideoMeta:
    """What the sampler needs to know about a video (from its header)."""

    path: str
    n_frames: int
    fps: float


class ModalityInputs(abc.ABC):
    """One modality's training inputs (picklable: settings only, no model)."""

    #: Mix training examples before :meth:`to_model` (waveforms) rather than after it.
    mix_before_model_input: bool = False
    #: :meth:`decode_clips` depends on the clips and the short side (False: the whole video, once).
    per_generation: bool = True

    def __init__(self, info: BackboneInfo, recipe: TrainRecipe, timeout_s: float = 60.0) -> None:
        self.info = info
        self.recipe = recipe
        self.timeout_s = timeout_s

    @abc.abstractmethod
    def draw_clip(self, video: VideoMeta, rng: np.random.Generator) -> np.ndarray:
        """A random clip position: ``(S, T)`` frame numbers (audio: the clip's ``(1, 2)`` times)."""

    def draw_size(self, rng: np.random.Generator) -> int | None:
        """The random short side to decode at (None: the modality has no pictures)."""
        return None

    @abc.abstractmethod
    def decode_clips(self, video: VideoMeta, clips: list[np.ndarray], size: int | None) -> dict[str, np.ndarray]:
        """One decode for several drawn clips: the arrays :meth:`example` cuts them from (raises DecodeError)."""

    @abc.abstractmethod
    def example(self, decoded: dict[str, np.ndarray], k: int, clip: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        """Clip ``k`` (drawn as ``clip``) of :meth:`decode_clips`' output, augmented with ``rng``."""

    def train_example(self, video: VideoMeta, rng: np.random.Generator) -> np.ndarray:
        """One randomly placed, augmented example; position, short side and augmentation all from ``rng``."""
        clip = self.draw_clip(video, rng)
        return self.example(self.decode_clips(video, [clip], self.draw_size(rng)), 0, clip, rng)

    @abc.abstractmethod
    def eval_clips(self, video: VideoMeta) -> np.ndarray:
        """``(K, ...)`` deterministic clips of a video (only real clips: K may be smaller)."""

    @abc.abstractmethod
    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """A collated batch ``(B, ...)`` (on the device) -> the backbone's input."""


def _picture_sampling(recipe: TrainRecipe) -> ClipSampling:
    segments = recipe.train_segments
    return ClipSampling(mode="uniform" if segments == 1 else "tsn", num_clips=segments,
                        frames_per_clip=recipe.frames, stride=recipe.stride, random=True, fps=recipe.fps)


class RGBInputs(ModalityInputs):
    """RGB clips: decode at a random short side, random crop + flip; eval = ``extract.run``'s views."""

    def __init__(self, info: BackboneInfo, recipe: TrainRecipe, timeout_s: float = 60.0) -> None:
        super().__init__(info, recipe, timeout_s)
        settings = recipe.extract_settings()
        self.sampling = _picture_sampling(recipe)
        self.augment = ClipAugment(recipe.short_side, recipe.scale, recipe.crop, recipe.flip)
        self.eval_maker = RGBClips(settings.clip_sampling(info), settings.view_spec(info), decoder=recipe.decoder)

    def draw_clip(self, video: VideoMeta, rng: np.random.Generator) -> np.ndarray:
        return clip_frame_indices(video.n_frames, self.sampling, rng, fps=video.fps)[0]  # (S, T)

    def draw_size(self, rng: np.random.Generator) -> int | None:
        return self.augment.draw_short_side(rng)

    def decode_clips(self, video: VideoMeta, clips: list[np.ndarray], size: int | None) -> dict[str, np.ndarray]:
        numbers = union_frame_indices(*clips)  # (F,) every frame of every clip
        decoded = decode_video(video.path, numbers, size, timeout_s=self.timeout_s, decoder=self.recipe.decoder)
        return {"frames": decoded.take(numbers), "numbers": numbers}  # (F, H, W, 3), (F,)

    def example(self, decoded: dict[str, np.ndarray], k: int, clip: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        frames = decoded["frames"][np.searchsorted(decoded["numbers"], clip.reshape(-1))]  # -> (S*T, H, W, 3)
        return self.augment.crop_flip_rgb(frames, rng)  # -> (S*T, crop, crop, 3)

    def eval_clips(self, video: VideoMeta) -> np.ndarray:
        maker = self.eval_maker
        decoded = decode_video(video.path, maker.frame_indices(video.n_frames, video.fps), maker.decode_short_side,
                               timeout_s=self.timeout_s, decoder=maker.decoder)
        made = maker.make(decoded, video.n_frames, video.fps)
        return made.inputs[made.valid[: len(made.inputs)]]  # (K, T, crop, crop, 3), the valid clips

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return to_tensor_clip(x, self.info.mean, self.info.std)  # (B, T, h, w, 3) -> (B, 3, T, h, w)


class FlowInputs(ModalityInputs):
    """Optical-flow stacks (``extract.media.flow``), x then y, for a 2-channel backbone."""

    def __init__(self, info: BackboneInfo, recipe: TrainRecipe, timeout_s: float = 60.0) -> None:
        super().__init__(info, recipe, timeout_s)
        if info.in_channels != 2:
            raise ValueError(f"flow training needs a 2-channel backbone (in_channels=2), got {info.in_channels}")
        settings = recipe.extract_settings()
        # flow is made in the DataLoader's CPU workers: ``paper`` resolves as on a CPU (TV-L1 fast)
        self.flow: FlowSettings = settings.flow_settings("cpu")[0]
        if self.flow.algorithm in RAFT_MODELS:
            raft_weights_file(self.flow.algorithm)  # missing weights: one error now, not one per data worker
        self.sampling = _picture_sampling(recipe)
        self.augment = ClipAugment(recipe.short_side, recipe.scale, recipe.crop, recipe.flip)
        self.eval_sampling: ClipSampling = settings.clip_sampling(info)
        self.eval_view: ViewSpec = settings.view_spec(info)

    def _stack(self, video: VideoMeta, idx: np.ndarray, size: int) -> np.ndarray:
        pairs = flow_frame_indices(idx, self.flow.stack, n_frames=video.n_frames, gap=self.flow.gap)  # (N, T, 2)
        decoded = decode_video(video.path, union_frame_indices(idx, pairs), size, timeout_s=self.timeout_s,
                               decoder=self.recipe.decoder)
        return clip_flow_stack(decoded, idx, self.flow, n_frames=video.n_frames, device="cpu")  # (N, 2, T, h, w)

    def draw_clip(self, video: VideoMeta, rng: np.random.Generator) -> np.ndarray:
        return clip_frame_indices(video.n_frames, self.sampling, rng, fps=video.fps)[0]  # (S, T)

    def draw_size(self, rng: np.random.Generator) -> int | None:
        return self.augment.draw_short_side(rng)

    def decode_clips(self, video: VideoMeta, clips: list[np.ndarray], size: int | None) -> dict[str, np.ndarray]:
        # each distinct frame pair is computed once for all the clips; float16 as extract.run's flow
        stacks = self._stack(video, np.concatenate(clips), size)  # (k*S, 2, T, h, w)
        return {"stacks": stacks.astype(np.float16).reshape(len(clips), -1, *stacks.shape[1:])}  # (k, S, 2, T, h, w)

    def example(self, decoded: dict[str, np.ndarray], k: int, clip: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        stack = decoded["stacks"][k]  # (S, 2, T, h, w)
        s, c, t, h, w = stack.shape
        joined = stack.transpose(1, 0, 2, 3, 4).reshape(c, s * t, h, w)  # (S, 2, T, h, w) -> (2, S*T, h, w)
        return self.augment.crop_flip_flow(joined, rng).astype(np.float32)  # -> (2, S*T, crop, crop)

    def eval_clips(self, video: VideoMeta) -> np.ndarray:
        idx, valid = clip_frame_indices(video.n_frames, self.eval_sampling, fps=video.fps)  # (N, T)
        stack = self._stack(video, idx[:valid], self.eval_view.decode_short_side)  # (n, 2, T, h, w)
        views = np.stack([flow_views(clip, self.eval_view) for clip in stack])  # (n, V, 2, T, c, c)
        return views.reshape(-1, *views.shape[2:])  # (n, V, 2, T, c, c) -> (n*V, 2, T, c, c)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        # [-1, 1] -> [0, 1], the flow images a backbone normalised with mean 0.5 expects
        return normalize((x.float() + 1.0) / 2.0, self.info.mean, self.info.std)  # (B, 2, T, h, w)


def audio_settings(info: BackboneInfo) -> AudioSettings:
    """``extract.media.audio``'s default windows and log-mel, sized to what an audio backbone takes.

    ``audio2d`` nets take ``info.clip_len`` log-mel frames of ``info.input_size`` bands: the
    default 2 s window when it gives that many frames (the ResNets: 198), else a window of
    ``(F - 1) * hop + win_length`` samples (VGGish: 96 frames = 0.975 s). ``audio1d`` nets take
    ``info.clip_len`` samples.
    """
    base = AudioSettings()
    if info.kind == "audio1d":
        return dataclasses.replace(base, window_s=info.clip_len / base.sample_rate)
    base = dataclasses.replace(base, n_mels=info.input_size)
    frames = 1 + (round(base.window_s * base.sample_rate) - base.win_length) // base.hop
    if frames == info.clip_len:
        return base
    samples = (info.clip_len - 1) * base.hop + base.win_length
    return dataclasses.replace(base, window_s=samples / base.sample_rate)


class AudioInputs(ModalityInputs):
    """Audio windows centred on a clip (random in training, uniform clips in evaluation)."""

    mix_before_model_input = True  # between-class learning mixes waveforms
    per_generation = False  # the decoded track serves every window of every epoch

    def __init__(self, info: BackboneInfo, recipe: TrainRecipe, timeout_s: float = 60.0,
                 settings: AudioSettings | None = None) -> None:
        super().__init__(info, recipe, timeout_s)
        if settings is None:
            raise ValueError("AudioInputs needs the backbone's audio settings: use make_inputs(backbone, recipe)")
        self.audio = settings
        self.sampling = ClipSampling(mode="uniform", num_clips=1, frames_per_clip=1, random=True)
        self.eval_sampling = (recipe.extract_settings().clip_sampling(None) if recipe.every is not None else
                              ClipSampling(mode="uniform", num_clips=recipe.eval_clips, frames_per_clip=1))

    def _windows(self, video: VideoMeta, sampling: ClipSampling, rng: np.random.Generator | None = None) -> np.ndarray:
        """The audio windows of the real clips of ``sampling`` that hold audio, (n, W)."""
        decoded = decode_video(video.path, [], audio_rate=self.audio.sample_rate, timeout_s=self.timeout_s,
                               decoder=self.recipe.decoder)
        clips = sample_clips(video.n_frames, sampling, video.fps if video.fps > 0 else decoded.fps, rng)
        times = clips.times[: clips.valid_clips]  # (n, 2)
        wave, valid = audio_windows(decoded.audio, self.audio.sample_rate, times, self.audio.window_s)
        if not valid.any():
            raise NoAudioTrack(video.path, "no audio track" if decoded.audio is None else "the audio track is empty")
        return wave[valid]  # (n, W)

    def draw_clip(self, video: VideoMeta, rng: np.random.Generator) -> np.ndarray:
        clips = sample_clips(video.n_frames, self.sampling, video.fps if video.fps > 0 else None, rng)
        return clips.times[: clips.valid_clips]  # (1, 2) start and end seconds

    def decode_clips(self, video: VideoMeta, clips: list[np.ndarray], size: int | None) -> dict[str, np.ndarray]:
        decoded = decode_video(video.path, [], audio_rate=self.audio.sample_rate, timeout_s=self.timeout_s,
                               decoder=self.recipe.decoder)
        audio = np.zeros(0, np.float32) if decoded.audio is None else decoded.audio
        return {"audio": audio, "has_audio": np.bool_(decoded.audio is not None), "path": np.str_(video.path)}

    def example(self, decoded: dict[str, np.ndarray], k: int, clip: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
        if not decoded["has_audio"]:
            raise NoAudioTrack(str(decoded["path"]), "no audio track")
        wave, valid = audio_windows(decoded["audio"], self.audio.sample_rate, clip, self.audio.window_s)  # (1, W)
        if not valid.any():
            raise NoAudioTrack(str(decoded["path"]), "the audio track is empty")
        return wave[0]  # (W,)

    def eval_clips(self, video: VideoMeta) -> np.ndarray:
        return self._windows(video, self.eval_sampling)  # (K, W)

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.info.kind == "audio2d":
            return log_mel(x, self.audio).unsqueeze(1)  # (B, W) -> (B, F, M) -> (B, 1, F, M)
        return x.unsqueeze(1)  # (B, W) -> (B, 1, W)


def make_inputs(backbone: Backbone, recipe: TrainRecipe, timeout_s: float = 60.0) -> ModalityInputs:
    """The inputs of ``recipe.modality`` (resolved recipe) for ``backbone``."""
    if recipe.modality == "rgb":
        return RGBInputs(backbone.info, recipe, timeout_s)
    if recipe.modality == "flow":
        return FlowInputs(backbone.info, recipe, timeout_s)
    return AudioInputs(backbone.info, recipe, timeout_s, settings=audio_settings(backbone.info))
