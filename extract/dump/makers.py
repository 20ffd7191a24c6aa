"""Input makers: the decode-side half of a feature producer (numpy, picklable, in workers).

An :class:`InputMaker` says which frames (and audio) it needs from a video and turns the
one :class:`~extract.media.decode.DecodedVideo` of that video into ``K`` model inputs with their
valid mask and times (:class:`ModelInput`). Makers run in the decode worker processes, so
they hold settings only; all of a modality's CPU work (crops, optical flow, log-mel)
happens here, in parallel over the workers. The model-side half is
:mod:`extract.dump.producers`.

=========  ===============  ==========================================================
modality   maker            inputs per video
=========  ===============  ==========================================================
rgb        RGBClips         (K, T, c, c, 3) uint8, K = N clips x V views, clip-major
flow       FlowClips        (K, 2, T, c, c) float16 in [-1, 1], K = N x V, clip-major
audio      AudioWindows     (K, F, M) log-mel, (K, P, 96, M) VGGish patches or (K, W)
                            waveform, float32, K = N (one window per clip)
=========  ===============  ==========================================================

Every modality of a run follows the same N clips (the same :class:`ClipSampling`), so
clip ``n`` of the RGB, flow and audio sets covers the same seconds. Only the real clips of a
video are made into inputs (``n`` of the N clips, from
:func:`~extract.media.sampling.sample_clips`): the K slots past them are padding, with
``valid`` False and zero features, so a time-based set with a large K-max (``--every``)
costs model time and memory for a video's real clips only.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass

import numpy as np

from extract.backbones import BackboneInfo
from extract.media.audio import AudioSettings, audio_windows, log_mel, vggish_patches
from extract.media.decode import DecodedVideo
from extract.media.flow import FlowSettings, clip_flow_stack, flow_frame_indices, flow_views
from extract.media.sampling import (
    ClipSampling,
    SampledClips,
    ViewSpec,
    sample_clips,
    union_frame_indices,
)
from extract.media.transforms import make_views

__all__ = [
    "AUDIO_INPUTS",
    "NO_AUDIO",
    "SILENT_AUDIO",
    "AudioWindows",
    "FlowClips",
    "InputMaker",
    "ModelInput",
    "RGBClips",
    "audio_input_for",
]

#: What an audio backbone is fed: log-mel of the window, VGGish patches of it, or samples.
AUDIO_INPUTS = ("log_mel", "vggish_patches", "waveform")
#: ModelInput.note of a video whose audio windows hold no sample (no or empty track).
NO_AUDIO = "no audio track"
#: ModelInput.note of a video whose audio track is all zeros: its windows are valid inputs
#: (log-mel ``log(log_offset)`` everywhere, finite) and their features are stored as usual.
SILENT_AUDIO = "silent audio track"


@dataclass(frozen=True, eq=False)
class ModelInput:
    """What a maker made of one video: K model inputs, which are real, and when they are.

    Attributes:
        inputs: ``(n, ...)`` model inputs of the first ``n <= K`` slots (the real clips x
            views), uint8 for pictures (RGB: ``(n, T, h, w, 3)``); slots ``n:`` are padding.
        valid: ``(K,)`` bool, False for padded slots (clips past a short video's end or past
            its clip count, audio windows without audio); always False from ``n`` on.
        times: ``(K, 2)`` float32 start/end seconds of each slot.
        note: something the run counts in its summary (:data:`NO_AUDIO`,
            :data:`SILENT_AUDIO`), or None.
    """

    inputs: np.ndarray
    valid: np.ndarray
    times: np.ndarray
    note: str | None = None


class InputMaker(abc.ABC):
    """The decode-side half of a producer: picklable settings, numpy only."""

    #: Audio sample rate this maker needs from the same container open (None: no audio).
    audio_rate: int | None = None
    #: Whether it needs video frames (False: its ``decode_short_side`` is not a wish).
    needs_frames: bool = True
    #: The decoder its frames and audio come from (``extract.media.decode.DECODERS``); every
    #: maker of one video must name the same one (one decode serves them all).
    decoder: str = "pyav"

    @property
    @abc.abstractmethod
    def clips(self) -> int:
        """K, the slots per video."""

    @property
    @abc.abstractmethod
    def decode_short_side(self) -> int | None:
        """Short side the frames should be decoded at (None: native size)."""

    @abc.abstractmethod
    def frame_indices(self, n_frames: int, fps: float) -> np.ndarray:
        """Frame numbers this maker needs from a video of ``n_frames`` frames at ``fps`` (any shape)."""

    @abc.abstractmethod
    def make(self, video: DecodedVideo, n_frames: int, fps: float) -> ModelInput:
        """Build the K inputs from the decoded video (``n_frames``/``fps`` as probed)."""


def _sampled(sampling: ClipSampling, video: DecodedVideo, n_frames: int, fps: float) -> SampledClips:
    """The clips of a decoded video (the probed ``fps``, else the decoder's)."""
    return sample_clips(n_frames, sampling, fps if fps > 0 else video.fps)


def _clip_slots(clips: SampledClips, video: DecodedVideo, views: int) -> tuple[np.ndarray, np.ndarray]:
    """``valid (K,)`` and ``times (K, 2)`` of N clips x ``views`` views, clip-major."""
    idx = clips.indices  # (N, T)
    real = np.arange(len(idx)) < clips.valid_clips  # (N,)
    if video.truncated and video.n_frames:  # clips starting past the real end repeat its last frame
        real &= idx[:, 0] < video.n_frames
    times = clips.times.astype(np.float32)  # (N, 2)
    return np.repeat(real, views), np.repeat(times, views, axis=0)  # (N,) -> (K,), (N, 2) -> (K, 2)


def _real_indices(sampling: ClipSampling, n_frames: int, fps: float) -> np.ndarray:
    """(n, T) frame numbers of the real clips only."""
    clips = sample_clips(n_frames, sampling, fps)
    return clips.indices[: clips.valid_clips]


@dataclass(frozen=True)
class _ViewedClips(InputMaker):
    """N sampled clips x V spatial views of a picture modality: ``K = N * V``, clip-major.

    Attributes:
        sampling: where the N clips of T frames go.
        view: resize and crops giving the V views of every clip.
        decoder: ``pyav`` or ``torchcodec`` (keyword only).
    """

    sampling: ClipSampling
    view: ViewSpec
    decoder: str = dataclasses.field(default="pyav", kw_only=True)

    @property
    def clips(self) -> int:
        return self.sampling.num_clips * self.view.num_views

    @property
    def decode_short_side(self) -> int:
        return self.view.decode_short_side


@dataclass(frozen=True)
class RGBClips(_ViewedClips):
    """N sampled clips x V spatial views of RGB frames: ``K = N * V``, clip-major.

    Attributes:
        sampling: where the N clips of T frames go.
        view: resize and crops giving the V views of every clip.
    """

    def frame_indices(self, n_frames: int, fps: float) -> np.ndarray:
        return _real_indices(self.sampling, n_frames, fps)

    def make(self, video: DecodedVideo, n_frames: int, fps: float) -> ModelInput:
        sampled = _sampled(self.sampling, video, n_frames, fps)
        clips = video.take(sampled.indices[: sampled.valid_clips])  # (n, T) -> (n, T, H, W, 3)
        views = np.stack([make_views(c, self.view) for c in clips])  # (n, V, T, c, c, 3)
        n, v = views.shape[:2]
        valid, times = _clip_slots(sampled, video, v)
        inputs = views.reshape(n * v, *views.shape[2:])  # (n, V, T, c, c, 3) -> (n*V, T, c, c, 3)
        return ModelInput(inputs, valid, times)


@dataclass(frozen=True)
class FlowClips(_ViewedClips):
    """The optical flow of the same N clips x V views as :class:`RGBClips`: ``K = N * V``.

    Flow ``t`` of a clip is the motion from its frame ``t`` to the next video frame
    (:func:`extract.media.flow.flow_frame_indices`), so the decode needs each clip frame and its
    successor; it is computed in the decode worker (one OpenCV / torch thread per worker; RAFT on
    a GPU: each worker holds its own copy of the model there).

    Attributes:
        sampling: where the N clips of T frames go (the RGB timeline).
        view: resize and crops (mirrored views negate x).
        flow: algorithm, bound, size (the short side the flow is computed at).
        backend: ``"cpu"`` or ``"cuda"`` (OpenCV's, or torch's for RAFT), from
            :func:`extract.media.flow.flow_backend`.
        choice: why this flow, when ``--flow paper`` chose it (recorded as ``flow_choice``).
    """

    flow: FlowSettings
    backend: str = "cpu"
    choice: str | None = None

    def frame_indices(self, n_frames: int, fps: float) -> np.ndarray:
        idx = _real_indices(self.sampling, n_frames, fps)  # (n, T)
        pairs = flow_frame_indices(idx, self.flow.stack, n_frames=n_frames, gap=self.flow.gap)  # (n, T*L, 2)
        return union_frame_indices(idx, pairs)

    def make(self, video: DecodedVideo, n_frames: int, fps: float) -> ModelInput:
        sampled = _sampled(self.sampling, video, n_frames, fps)
        stack = clip_flow_stack(
            video, sampled.indices[: sampled.valid_clips], self.flow, n_frames=n_frames, device=self.backend
        )  # (n, 2, T, h, w)
        views = np.stack([flow_views(s, self.view) for s in stack])  # (n, V, 2, T, c, c)
        n, v = views.shape[:2]
        valid, times = _clip_slots(sampled, video, v)
        inputs = views.reshape(n * v, *views.shape[2:]).astype(np.float16)  # -> (n*V, 2, T, c, c)
        return ModelInput(inputs, valid, times)


@dataclass(frozen=True)
class AudioWindows(InputMaker):
    """One audio window per clip of the run's timeline: ``K = N`` (no spatial views).

    A window is ``audio.window_s`` long, centred on its clip
    (:func:`extract.media.audio.audio_windows`); its slot is valid when the clip is and the window
    holds audio. A video without audio gives all-False slots and the note :data:`NO_AUDIO`;
    a track of zeros is real (silent) input: valid slots and the note :data:`SILENT_AUDIO`.

    Attributes:
        sampling: the N clips whose times the windows follow (the RGB timeline).
        audio: sample rate, window and log-mel parameters.
        input: ``log_mel`` ``(K, F, M)``, ``vggish_patches`` ``(K, P, patch_frames, M)``
            or ``waveform`` ``(K, W)``, all float32.
        patch_frames: frames per VGGish patch (non-overlapping; leftover frames dropped).
        decoder: ``pyav`` or ``torchcodec`` (keyword only).
    """

    sampling: ClipSampling
    audio: AudioSettings
    input: str = "log_mel"
    patch_frames: int = 96
    decoder: str = dataclasses.field(default="pyav", kw_only=True)
    needs_frames = False

    def __post_init__(self) -> None:
        if self.input not in AUDIO_INPUTS:
            raise ValueError(
                f"AudioWindows.input must be one of {AUDIO_INPUTS}, got {self.input!r}"
            )

    @property
    def audio_rate(self) -> int:  # type: ignore[override]
        return self.audio.sample_rate

    @property
    def clips(self) -> int:
        return self.sampling.num_clips

    @property
    def decode_short_side(self) -> None:
        return None

    def frame_indices(self, n_frames: int, fps: float) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    def make(self, video: DecodedVideo, n_frames: int, fps: float) -> ModelInput:
        sampled = _sampled(self.sampling, video, n_frames, fps)
        n = sampled.valid_clips
        times = sampled.times  # (N, 2)
        a = self.audio
        wave, heard = audio_windows(video.audio, a.sample_rate, times[:n], a.window_s)  # (n, W), (n,)
        valid = np.zeros(len(times), dtype=bool)  # (N,)
        valid[:n] = heard
        if self.input == "waveform":
            inputs = wave
        else:
            mel = log_mel(wave, a)  # (n, W) -> (n, F, M)
            if self.input == "vggish_patches":
                mel = vggish_patches(mel, self.patch_frames, self.patch_frames)  # -> (n, P, 96, M)
            inputs = mel.numpy()
        note = NO_AUDIO if not heard.any() else None if wave.any() else SILENT_AUDIO
        return ModelInput(inputs, valid, times.astype(np.float32), note)


def audio_input_for(
    info: BackboneInfo, base: AudioSettings | None = None
) -> tuple[AudioSettings, str]:
    """The audio settings and input kind an audio backbone is fed (see the module docstring).

    ``audio1d`` nets take ``info.clip_len`` samples (EnvNet-v2: 2 s at 16 kHz): the window is
    that long. ``audio2d`` nets get the log-mel of the (default 2 s) window with
    ``info.input_size`` bands: whole when ``info.clip_len`` is its frame count (ResNets:
    198 frames), else cut into ``clip_len``-frame patches whose embeddings are averaged
    (VGGish: a 2 s window is two 0.96 s patches).

    Raises:
        ValueError: not an audio backbone, or one that needs more frames than a window has.
    """
    base = base or AudioSettings()
    if info.kind == "audio1d":
        return dataclasses.replace(base, window_s=info.clip_len / base.sample_rate), "waveform"
    if info.kind != "audio2d":
        raise ValueError(
            f"{info.name} is a {info.kind} backbone, not an audio one; --backbone audio:NAME "
            "takes resnet18_audio, resnet34_audio, vggish, envnet_v2 (or their _tiny variants)"
        )
    s = dataclasses.replace(base, n_mels=info.input_size)
    if info.clip_len == s.frames_per_window:
        return s, "log_mel"
    if info.clip_len < s.frames_per_window:
        return s, "vggish_patches"
    raise ValueError(
        f"{info.name} takes {info.clip_len} log-mel frames but a {s.window_s:g} s window has "
        f"{s.frames_per_window}; build it with clip_len={s.frames_per_window}"
    )
