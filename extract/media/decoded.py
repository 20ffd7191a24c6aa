"""What a decoder returns and raises: the contract both of ``decode_video``'s decoders keep.

:mod:`extract.media.decode` (PyAV, the default) and :mod:`extract.media.torchcodec_decode`
(optional) both return a :class:`DecodedVideo` and raise :class:`DecodeError` subclasses; both
size frames with :func:`target_size`. Import these names from :mod:`extract.media.decode`
(which re-exports them) or from here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from extract.errors import ExtractError
from extract.media.sampling import short_side_size

Size = int | tuple[int, int] | None


class DecodeError(ExtractError):
    """A video could not be decoded. ``str(err)`` is one line: kind, path, detail, what to do.

    ``extract.run`` records it as the row's error and goes on; a command working on one
    file (``extract.search``) prints it and exits, like every ``ExtractError``.
    """

    kind = "cannot decode video"
    hint = "check the file with ffprobe"

    def __init__(self, path: str | os.PathLike[str], detail: str) -> None:
        self.path = os.fspath(path)
        self.detail = " ".join(str(detail).split())  # one line, whatever FFmpeg said
        super().__init__(f"{self.kind}: {self.path}: {self.detail} ({self.hint})")


class VideoNotFound(DecodeError):
    kind = "video not found"
    hint = "check the path column of the video list"


class CorruptVideo(DecodeError):
    kind = "corrupt or unreadable video"
    hint = "re-encode it with ffmpeg or drop it from the video list"


class NoVideoStream(DecodeError):
    kind = "no video stream"
    hint = "the file has no video track; drop it or use it for audio features only"


class EmptyVideo(DecodeError):
    kind = "empty video"
    hint = "the file has no decodable frames; drop it from the video list"


class DecodeTimeout(DecodeError):
    kind = "decode timed out"
    hint = "raise timeout_s, or re-encode the file if it keeps hanging"


class WindowOutsideVideo(DecodeError):
    kind = "trim window outside the video"
    hint = "check time_start/time_end of its row against the file"


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (plus a packet count where it says nothing).

    Attributes:
        n_frames: frames in the video stream (header, or demuxed packets if the header has none).
        fps: average frame rate (frames per second).
        duration: ``n_frames / fps`` seconds, the clock ``clip_times`` uses.
        width: coded frame width in pixels.
        height: coded frame height in pixels.
        has_audio: whether the container has an audio stream.
    """

    n_frames: int
    fps: float
    duration: float
    width: int
    height: int
    has_audio: bool


@dataclass(frozen=True, eq=False)
class DecodedVideo:
    """The needed frames (and optionally the audio) of one video, from one open.

    Attributes:
        frames: (M, H, W, 3) uint8 RGB, one per entry of ``frame_numbers``.
        frame_numbers: (M,) int64 ascending frame numbers (decoder output order).
        fps: average frame rate from the container (nan if it gives none).
        n_frames: exact frame count if decoding reached the end of the stream, else the
            header's count (None if the header has none).
        duration: ``n_frames / fps`` seconds (None when ``n_frames`` is).
        has_audio: whether the container has an audio stream.
        audio: (S,) float32 mono at ``audio_rate``, or None (no audio stream or not asked for).
        audio_rate: sample rate of ``audio``, or None.
        truncated: the stream ended before a needed frame; those repeat the last frame.
        n_decoded: video frames the decoder produced (needed or not).
    """

    frames: np.ndarray
    frame_numbers: np.ndarray
    fps: float
    n_frames: int | None
    duration: float | None
    has_audio: bool
    audio: np.ndarray | None
    audio_rate: int | None
    truncated: bool
    n_decoded: int

    def take(self, indices: np.ndarray) -> np.ndarray:
        """Gather frames by frame number: (...) int -> (..., H, W, 3) uint8.

        Raises:
            ValueError: if a frame number was not among the decoded ones.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if not np.isin(indices, self.frame_numbers).all():
            missing = np.setdiff1d(indices, self.frame_numbers)[:5].tolist()
            raise ValueError(f"frames {missing} were not decoded; include them in frame_indices")
        pos = np.searchsorted(self.frame_numbers, indices)
        return self.frames[pos]  # (...) -> (..., H, W, 3)

    def trimmed(self, first: int, count: int) -> DecodedVideo:
        """The frames ``first .. first + count - 1`` (and their audio) as if they were the
        whole file: frame ``first`` becomes frame 0 and audio sample 0 is at ``first / fps``.

        The frames must have been decoded with their file frame numbers (the caller adds
        ``first`` to the indices it asks :func:`decode_video` for).
        """
        keep = (self.frame_numbers >= first) & (self.frame_numbers < first + count)
        n = count if self.n_frames is None else max(0, min(count, self.n_frames - first))
        audio = self.audio
        if audio is not None and self.audio_rate and self.fps > 0:
            a, b = (round(f / self.fps * self.audio_rate) for f in (first, first + count))
            audio = audio[a:b]
        return dataclasses.replace(
            self, frames=self.frames[keep], frame_numbers=self.frame_numbers[keep] - first, n_frames=n,
            duration=n / self.fps if self.fps > 0 else None, audio=audio)


def target_size(size: Size, height: int, width: int) -> tuple[int, int]:
    """(height, width) for the scaler from ``size`` and the coded ``height`` x ``width``."""
    if size is None:
        return height, width
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        return short_side_size(height, width, int(size))
    if isinstance(size, tuple) and len(size) == 2 and all(int(v) >= 1 for v in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be None, a short side (int) or (height, width), got {size!r}")
