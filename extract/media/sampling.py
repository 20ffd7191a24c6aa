"""Which frames of a video become clips, and which spatial views each clip gives.

Two frozen settings records, both stored in a feature set's attrs (``to_dict``):

* :class:`ClipSampling`: *when* -- ``num_clips`` (N) clips of ``frames_per_clip`` (T)
  frames, ``stride`` (s) frames apart, placed by one of three modes.
* :class:`ViewSpec`: *where* -- short-side resize, then centre / three / five / ten crops,
  optionally at several scales.

Pure functions turn a frame count into frame numbers (:func:`clip_frame_indices`) and frame
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

Short videos. Frame numbers past the last frame are clamped to it (the last frame is
repeated; clips are never looped). A clip is *real* if it starts inside the video and is
not a repeat of the previous real clip. The real clips come first, in time order, and the
rest of the N rows repeat the last real clip; ``valid_clips`` counts the real ones, so the
store's valid mask for a video is ``arange(N) < valid_clips`` (times ``V`` views each).

The K axis of a feature set is clips x views, clip-major: ``k = clip * V + view``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLING_MODES = ("uniform", "tsn", "dense")
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
_CLIP_FLAGS = {"num_clips": "--clips", "frames_per_clip": "--frames", "stride": "--stride"}


@dataclass(frozen=True)
class ClipSampling:
    """How clips are placed in time.

    Attributes:
        mode: ``"uniform"``, ``"tsn"`` or ``"dense"`` (see the module docstring).
        num_clips: N, clips per video (TSN: segments).
        frames_per_clip: T, frames in one clip.
        stride: s, frame step inside a clip (and between dense clips).
        random: training-time jitter; needs an ``rng`` in :func:`clip_frame_indices`.
    """

    mode: str = "uniform"
    num_clips: int = 1
    frames_per_clip: int = 8
    stride: int = 1
    random: bool = False

    def __post_init__(self) -> None:
        if self.mode not in SAMPLING_MODES:
            raise ValueError(
                f"--sampling must be one of {SAMPLING_MODES}, got {self.mode!r}"
            )
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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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


def _clip_starts(
    n_frames: int, sampling: ClipSampling, rng: np.random.Generator | None
) -> np.ndarray:
    """Unclamped start frame of each clip, (N,) int64, non-decreasing."""
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
        if n == 1:
            return np.array([slack // 2], dtype=np.int64)
        return (2 * i * slack + (n - 1)) // (2 * (n - 1))  # floor(i*slack/(n-1) + 1/2), exact
    return ((2 * i + 1) * (slack + 1)) // (2 * n)  # tsn: floor((i + 1/2)(slack+1)/n), exact


def clip_frame_indices(
    n_frames: int, sampling: ClipSampling, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, int]:
    """Frame numbers of every clip of a video with ``n_frames`` frames.

    Args:
        n_frames: frames in the video (>= 1).
        sampling: where clips go.
        rng: needed when ``sampling.random``; e.g. ``np.random.default_rng(seed)``.

    Returns:
        ``(indices, valid_clips)``: indices (N, T) int64 in ``[0, n_frames)``, real clips
        first then repeats of the last real clip; ``valid_clips`` in ``[1, N]``.
    """
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    if sampling.random and rng is None:
        raise ValueError("random sampling needs an rng: pass rng=np.random.default_rng(seed)")
    starts = _clip_starts(int(n_frames), sampling, rng)  # (N,)
    real = np.unique(starts[starts < n_frames])  # sorted distinct starts inside the video
    valid = len(real)  # >= 1: the first start is always 0 <= start < n_frames
    starts = np.concatenate([real, np.full(sampling.num_clips - valid, real[-1])])  # (N,)
    offsets = np.arange(sampling.frames_per_clip, dtype=np.int64) * sampling.stride  # (T,)
    indices = np.minimum(
        starts[:, None] + offsets[None, :], n_frames - 1
    )  # (N, 1)+(1, T) -> (N, T)
    return indices, valid


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


def window_frames(start_s: float, end_s: float, fps: float, n_frames: int) -> tuple[int, int]:
    """The frames of an untrimmed video inside the window ``[start_s, end_s)`` seconds.

    Frame ``i`` starts at ``i / fps`` (the clock of :func:`clip_times`); the window holds the
    frames that start inside it, clamped to the video's ``n_frames``.

    Returns:
        ``(first, count)``: frame numbers ``first .. first + count - 1``; ``count`` is 0 when
        the window lies past the video's end.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if not 0 <= start_s < end_s:
        raise ValueError(f"the window must satisfy 0 <= start < end, got [{start_s!r}, {end_s!r})")
    first = math.ceil(round(start_s * fps, 6))  # 0.1 s x 30 fps = 3.0000000000000004: frame 3
    last = min(math.ceil(round(end_s * fps, 6)), int(n_frames))
    return min(first, int(n_frames)), max(last - first, 0)


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
