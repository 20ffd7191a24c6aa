"""Which frames of a video become clips, and which spatial views each clip gives.

Two frozen settings records, both stored in a feature set's attrs (``to_dict``):

* :class:`ClipSampling`: *when* -- ``num_clips`` (N) clips of ``frames_per_clip`` (T)
  frames, ``stride`` (s) frames apart, placed by one of three fixed-count modes, or one
  clip every ``every_s`` seconds (``"every"``, at most N); optionally at ``fps`` frames a second.
* :class:`ViewSpec`: *where* -- short-side resize, then centre / three / five / ten crops,
  optionally at several scales.

Pure functions turn a frame count (and rate) into frame numbers, real clips and times
(:func:`sample_clips`; :func:`clip_frame_indices` for the frame numbers alone) and frame
numbers into seconds (:func:`clip_times`). Every clip spans ``span = (T - 1) * s + 1``
frames; ``slack = max(n_frames - span, 0)`` is the room its start has.

Modes (all starts are non-decreasing; ``u`` is a uniform draw in [0, 1)):

* ``"uniform"`` -- uniform multi-clip testing, end-point inclusive, the pytorchvideo
  ``ConstantClipsPerVideoSampler`` convention in frames: the first clip starts at frame 0,
  the last one ends on the last frame, the others are evenly spaced between::

      start_i = floor(i * slack / (N - 1) + 1/2)        (N > 1)
      start_0 = floor(slack / 2)                        (N == 1, the centre clip)

  ``random=True`` (training) keeps equal spacing but draws one common phase ``u``:
  ``start_i = floor((i + u) * (slack + 1) / N)``.
* ``"tsn"`` -- TSN segments: the start range is cut into N equal segments, one clip per
  segment, at the segment centre (the mmaction2 ``SampleFrames`` test convention)::

      start_i = floor((i + 1/2) * (slack + 1) / N)

  ``random=True`` (TSN training) draws one ``u_i`` per segment:
  ``start_i = floor((i + u_i) * (slack + 1) / N)``. With T = 1 this is classic TSN.
* ``"dense"`` -- N back-to-back clips: one unbroken run of ``N * T`` frames at stride s,
  cut into N clips (``start_i = start_0 + i * T * s``), so the K axis is a contiguous
  timeline. The run is centred (``start_0 = floor(slack_run / 2)``) or, with
  ``random=True``, placed uniformly at random; ``slack_run = max(n - ((N*T - 1)*s + 1), 0)``.

* ``"every"`` -- time-based clips for untrimmed video: clip ``w`` starts at ``w * every_s``
  seconds, ``w = 0, 1, ...``, and a clip that would run past the end of the video is
  **dropped**: with ``span_s = span / rate`` (``rate`` = ``fps``, else the video's own), a
  video of ``duration = n_frames / video_fps`` seconds has ``W = floor((duration - span_s) /
  every_s) + 1`` windows (one, from 0 s, if even the first does not fit: a video shorter than
  a clip gives one clip whose missing frames repeat the last, as below). ``num_clips`` (K)
  is a cap: with ``W > K`` the windows are evenly thinned to K by the ``"uniform"`` rule over
  window numbers (the first and last window kept, ``w_i = floor(i (W-1)/(K-1) + 1/2)``). The
  clip's frames are the ones shown at ``start + j * s / rate`` (``j < T``); its times are
  these nominal instants, ``[w * every_s, w * every_s + span_s]`` (the end clamped to the
  video's), so the stored starts are exactly ``0, every_s, 2 every_s, ...``. No ``random``.

``fps`` (any mode): the clip's frames are taken at this rate, resampled from the video's:
frame ``g`` of the resampled video is the source frame shown at ``g / fps`` seconds,
``floor(g * video_fps / fps)``, and the video has ``floor(n_frames * fps / video_fps)`` (at
least 1) resampled frames. The fixed-count modes place their clips on that grid (so
``stride`` counts resampled frames) and report its times; ``fps`` above the video's repeats
frames. Without ``fps`` every mode works on the video's own frames, as before.

Short videos. Frame numbers past the last frame are clamped to it (the last frame is
repeated; clips are never looped). A clip is *real* if it starts inside the video and is
not a repeat of the previous real clip. The real clips come first, in time order, and the
rest of the N rows repeat the last real clip; ``valid_clips`` counts the real ones, so the
store's valid mask for a video is ``arange(N) < valid_clips`` (times ``V`` views each).

The K axis of a feature set is clips x views, clip-major: ``k = clip * V + view``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLING_MODES = ("uniform", "tsn", "dense")
#: The time-based mode (``--every``): a clip every ``every_s`` seconds, at most ``num_clips``.
EVERY = "every"
_EPS = 1e-6  # in frames or windows: absorbs float error of products like 3 * 0.1 * 30
CROP_MODES = {"center": 1, "three": 3, "five": 5, "ten": 10}


def _check_fields(cls: type, d: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(
            f"{cls.__name__}.from_dict: unknown keys {unknown}; expected a subset of "
            f"{sorted(known)} (was this written by a newer version?)"
        )


#: The flags of ClipSampling's numbers (extract.run; extract.train's --train-segments and
#: --eval-clips also set the clips).
_CLIP_FLAGS = {"num_clips": "--clips", "frames_per_clip": "--frames", "stride": "--stride",
               "every_s": "--every", "fps": "--fps"}


@dataclass(frozen=True)
class ClipSampling:
    """How clips are placed in time.

    Attributes:
        mode: ``"uniform"``, ``"tsn"``, ``"dense"`` or ``"every"`` (see the module docstring).
        num_clips: N, clips per video (TSN: segments); for ``"every"`` the most clips a video
            keeps (K-max, the set's K).
        frames_per_clip: T, frames in one clip.
        stride: s, frame step inside a clip (and between dense clips).
        random: training-time jitter; needs an ``rng`` in :func:`clip_frame_indices`.
        every_s: seconds between clip starts; set exactly when ``mode == "every"``.
        fps: frames per second the clips are taken at (None: the video's own).
    """

    mode: str = "uniform"
    num_clips: int = 1
    frames_per_clip: int = 8
    stride: int = 1
    random: bool = False
    every_s: float | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in (*SAMPLING_MODES, EVERY):
            raise ValueError(
                f"--sampling must be one of {SAMPLING_MODES}, got {self.mode!r}"
            )
        for name in ("every_s", "fps"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 < value < np.inf:
                raise ValueError(f"{_CLIP_FLAGS[name]} must be a number > 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if (self.mode == EVERY) != (self.every_s is not None):
            raise ValueError("ClipSampling: mode 'every' goes with every_s (seconds between clips), "
                             f"the fixed-count modes without it; got mode {self.mode!r}, every_s {self.every_s!r}")
        if self.mode == EVERY and self.random:
            raise ValueError("time-based clips (--every) are deterministic; random=True is for the fixed-count modes")
        for name in ("num_clips", "frames_per_clip", "stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{_CLIP_FLAGS[name]} must be a whole number >= 1, got {value!r}")
        if type(self.random) not in (bool, np.bool_):
            raise ValueError(f"ClipSampling.random must be a bool, got {self.random!r}")

    @property
    def span(self) -> int:
        """Frames covered by one clip, first to last inclusive."""
        return (self.frames_per_clip - 1) * self.stride + 1

    @property
    def needs_fps(self) -> bool:
        """Whether placing the clips needs the video's frame rate (time-based or resampled)."""
        return self.every_s is not None or self.fps is not None

    def to_dict(self) -> dict[str, Any]:
        """The fields; ``every_s`` and ``fps`` only when set, so fixed-count records are unchanged."""
        d = dataclasses.asdict(self)
        return {k: v for k, v in d.items() if v is not None or k not in ("every_s", "fps")}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSampling:
        _check_fields(cls, d)
        return cls(**d)


@dataclass(frozen=True)
class ViewSpec:
    """Spatial views of every clip.

    Frames are resized so their short side is ``short_side`` (the decoder's scaler does
    this, see :attr:`decode_short_side`), then cropped to ``crop x crop``. ``crops`` picks
    the positions: ``"center"`` (1), ``"three"`` (start / centre / end of the long side,
    SlowFast-style), ``"five"`` (4 corners + centre), ``"ten"`` (five + their horizontal
    flips). ``scales`` adds more short sides for multi-scale testing; views are ordered
    scale-major (``short_side`` first, then each of ``scales``), then crop position.

    Attributes:
        short_side: short side in pixels of the first scale.
        crop: square crop size in pixels; at most every short side.
        crops: crop positions, a key of ``CROP_MODES``.
        scales: extra short sides (pixels) for multi-scale views; empty for one scale.
    """

    short_side: int = 128
    crop: int = 112
    crops: str = "center"
    scales: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        scales = tuple(self.scales)
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in scales):
            raise ValueError(f"--scales must be whole short sides in pixels, got {self.scales!r}")
        object.__setattr__(self, "scales", tuple(int(s) for s in scales))
        for name in ("short_side", "crop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a whole number >= 1, got {value!r}")
        if self.crops not in CROP_MODES:
            raise ValueError(
                f"--crops must be one of {sorted(CROP_MODES)}, got {self.crops!r}"
            )
        sides = self.short_sides
        if len(set(sides)) != len(sides):
            raise ValueError(f"--short-side and --scales repeat a short side ({sides}); list each scale once")
        if min(sides) < self.crop:
            raise ValueError(
                f"--crop {self.crop} is larger than the short side {min(sides)}; "
                "lower --crop or raise --short-side / --scales"
            )

    @property
    def short_sides(self) -> tuple[int, ...]:
        """All short sides, in view order."""
        return (self.short_side, *self.scales)

    @property
    def decode_short_side(self) -> int:
        """Short side to ask the decoder for: the largest scale (others are made from it)."""
        return max(self.short_sides)

    @property
    def num_views(self) -> int:
        """V, views per clip: scales x crop positions."""
        return len(self.short_sides) * CROP_MODES[self.crops]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scales"] = list(self.scales)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViewSpec:
        _check_fields(cls, d)
        return cls(**d)


def _uniform_starts(n: int, slack: int) -> np.ndarray:
    """``floor(i * slack / (n - 1) + 1/2)`` for ``i < n`` (n == 1: ``slack // 2``), exact, (n,) int64."""
    i = np.arange(n, dtype=np.int64)
    if n == 1:
        return np.array([slack // 2], dtype=np.int64)
    return (2 * i * slack + (n - 1)) // (2 * (n - 1))


def _clip_starts(
    n_frames: int, sampling: ClipSampling, rng: np.random.Generator | None
) -> np.ndarray:
    """Unclamped start frame of each clip of a fixed-count mode, (N,) int64, non-decreasing."""
    n, t, s = sampling.num_clips, sampling.frames_per_clip, sampling.stride
    i = np.arange(n, dtype=np.int64)
    if sampling.mode == "dense":
        run = (n * t - 1) * s + 1
        slack = max(n_frames - run, 0)
        start0 = int(rng.integers(0, slack + 1)) if sampling.random else slack // 2
        return start0 + i * t * s
    slack = max(n_frames - sampling.span, 0)
    if sampling.random:
        u = rng.random() if sampling.mode == "uniform" else rng.random(n)
        return np.floor((i + u) * (slack + 1) / n).astype(np.int64)
    if sampling.mode == "uniform":
        return _uniform_starts(n, slack)
    return ((2 * i + 1) * (slack + 1)) // (2 * n)  # tsn: floor((i + 1/2)(slack+1)/n), exact


def _fixed_clips(
    n_frames: int, sampling: ClipSampling, rng: np.random.Generator | None
) -> tuple[np.ndarray, int]:
    """Frame numbers (N, T) of a fixed-count mode on ``n_frames`` frames, and the real clips."""
    starts = _clip_starts(n_frames, sampling, rng)  # (N,)
    real = np.unique(starts[starts < n_frames])  # sorted distinct starts inside the video
    valid = len(real)  # >= 1: the first start is always 0 <= start < n_frames
    starts = np.concatenate([real, np.full(sampling.num_clips - valid, real[-1])])  # (N,)
    offsets = np.arange(sampling.frames_per_clip, dtype=np.int64) * sampling.stride  # (T,)
    indices = np.minimum(
        starts[:, None] + offsets[None, :], n_frames - 1
    )  # (N, 1)+(1, T) -> (N, T)
    return indices, valid


@dataclass(frozen=True, eq=False)
class SampledClips:
    """Where the clips of one video are: frame numbers, how many are real, and when.

    Attributes:
        indices: (N, T) int64 source frame numbers in ``[0, n_frames)``; the real clips
            first, in time order, then repeats of the last real clip.
        valid_clips: real clips, in ``[1, N]``.
        times: (N, 2) float64 ``[start_s, end_s]`` per clip (NaN when the frame rate is unknown).
    """

    indices: np.ndarray
    valid_clips: int
    times: np.ndarray


def time_windows(duration_s: float, every_s: float, span_s: float) -> int:
    """W: clips of ``span_s`` seconds, one starting every ``every_s`` seconds from 0, that end
    inside a video of ``duration_s`` seconds; at least 1 (a video shorter than one clip keeps
    its clip at 0 s)."""
    if not (np.isfinite(duration_s) and every_s > 0 and span_s >= 0):
        raise ValueError(f"time_windows needs a finite duration, every_s > 0 and span_s >= 0, got "
                         f"{duration_s!r}, {every_s!r}, {span_s!r}")
    return max(int(np.floor((duration_s - span_s) / every_s + _EPS)) + 1, 1)


def _every_clips(n_frames: int, fps: float, sampling: ClipSampling) -> SampledClips:
    """The ``"every"`` mode (module docstring): windows that fit, thinned to at most N."""
    k, t, s = sampling.num_clips, sampling.frames_per_clip, sampling.stride
    rate = sampling.fps or fps
    duration, span_s = n_frames / fps, sampling.span / rate
    windows = time_windows(duration, sampling.every_s, span_s)
    w = _uniform_starts(k, windows - 1) if windows > k else np.arange(windows, dtype=np.int64)  # (n,)
    starts = w * sampling.every_s  # (n,) seconds
    instants = starts[:, None] + np.arange(t) * (s / rate)  # (n, 1)+(T,) -> (n, T) seconds
    indices = np.minimum(np.floor(instants * fps + _EPS).astype(np.int64), n_frames - 1)  # (n, T)
    times = np.stack([starts, np.minimum(starts + span_s, duration)], axis=1)  # 2 x (n,) -> (n, 2)
    pad = k - len(w)
    return SampledClips(
        np.concatenate([indices, np.repeat(indices[-1:], pad, axis=0)]),  # -> (N, T)
        len(w),
        np.concatenate([times, np.repeat(times[-1:], pad, axis=0)]),  # -> (N, 2)
    )


def sample_clips(
    n_frames: int,
    sampling: ClipSampling,
    fps: float | None = None,
    rng: np.random.Generator | None = None,
) -> SampledClips:
    """The clips of a video with ``n_frames`` frames at ``fps`` frames a second (every mode).

    Args:
        n_frames: frames in the video (>= 1).
        sampling: where clips go.
        fps: the video's frame rate; needed by ``"every"`` and by ``sampling.fps`` (without
            it the fixed-count modes still place clips, with NaN times).
        rng: needed when ``sampling.random``; e.g. ``np.random.default_rng(seed)``.

    Raises:
        ValueError: a bad ``n_frames``, no ``rng`` for random sampling, or no frame rate
            where one is needed.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    n_frames = int(n_frames)
    if sampling.random and rng is None:
        raise ValueError("random sampling needs an rng: pass rng=np.random.default_rng(seed)")
    known = fps is not None and np.isfinite(fps) and fps > 0
    if sampling.needs_fps and not known:
        flag = "--every" if sampling.mode == EVERY else "--fps"
        raise ValueError(f"{flag} places clips in seconds but the video's frame rate is unknown ({fps!r}); "
                         "re-encode it with a constant frame rate")
    if sampling.mode == EVERY:
        return _every_clips(n_frames, float(fps), sampling)
    if sampling.fps is None:
        indices, valid = _fixed_clips(n_frames, sampling, rng)  # (N, T)
        times = clip_times(indices, fps) if known else np.full((len(indices), 2), np.nan)
        return SampledClips(indices, valid, times)
    grid = max(int(np.floor(n_frames * sampling.fps / fps + _EPS)), 1)  # resampled frames
    on_grid, valid = _fixed_clips(grid, sampling, rng)  # (N, T) resampled frame numbers
    indices = np.minimum(np.floor(on_grid * fps / sampling.fps + _EPS).astype(np.int64), n_frames - 1)
    return SampledClips(indices, valid, clip_times(on_grid, sampling.fps))


def clip_frame_indices(
    n_frames: int,
    sampling: ClipSampling,
    rng: np.random.Generator | None = None,
    *,
    fps: float | None = None,
) -> tuple[np.ndarray, int]:
    """Frame numbers of every clip of a video with ``n_frames`` frames.

    Args:
        n_frames: frames in the video (>= 1).
        sampling: where clips go.
        rng: needed when ``sampling.random``; e.g. ``np.random.default_rng(seed)``.
        fps: the video's frame rate (needed by ``"every"`` and ``sampling.fps``).

    Returns:
        ``(indices, valid_clips)``: indices (N, T) int64 in ``[0, n_frames)``, real clips
        first then repeats of the last real clip; ``valid_clips`` in ``[1, N]``.
    """
    clips = sample_clips(n_frames, sampling, fps, rng)
    return clips.indices, clips.valid_clips


def clip_times(indices: np.ndarray, fps: float) -> np.ndarray:
    """Start and end of each clip in seconds, from frame numbers at a nominal ``fps``.

    A clip starts when its first frame starts (``first / fps``) and ends when its last
    frame ends (``(last + 1) / fps``).

    Args:
        indices: (N, T) frame numbers from :func:`clip_frame_indices`.
        fps: frames per second (> 0).

    Returns:
        (N, 2) float64 ``[start_s, end_s]``.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] < 1:
        raise ValueError(f"indices must be (N, T) with T >= 1, got shape {indices.shape}")
    first = indices[:, 0].astype(np.float64)
    last = indices[:, -1].astype(np.float64)
    return np.stack([first / fps, (last + 1.0) / fps], axis=1)  # 2 x (N,) -> (N, 2)


def union_frame_indices(*indices: np.ndarray) -> np.ndarray:
    """Sorted distinct frame numbers needed by several index arrays (one decode for all).

    Args:
        *indices: any number of integer arrays of frame numbers, any shapes.

    Returns:
        (M,) int64, sorted and unique: the ``frame_indices`` for ``decode_video``.
    """
    if not indices:
        raise ValueError("union_frame_indices needs at least one index array")
    flat = [np.asarray(a, dtype=np.int64).ravel() for a in indices]
    return np.unique(np.concatenate(flat))


def short_side_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """Output ``(height, width)`` when the short side becomes ``short_side``.

    The long side is scaled by the same factor and rounded half up (at least 1 pixel).
    The decoder uses the same rule, so decoder and numpy resizes agree on shapes.
    """
    if min(height, width) < 1 or short_side < 1:
        raise ValueError(f"sizes must be >= 1, got {height}x{width} -> short side {short_side}")
    short, long_ = min(height, width), max(height, width)
    new_long = max((2 * long_ * short_side + short) // (2 * short), 1)  # round half up, exact
    return (short_side, new_long) if height <= width else (new_long, short_side)
