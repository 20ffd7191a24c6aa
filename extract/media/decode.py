"""Single-pass, forward-only video (and audio) decoding with PyAV (the default decoder).

``decode_video(..., decoder="torchcodec")`` gives the same result through torchcodec where it is
installed (:mod:`extract.media.torchcodec_decode`, which says what differs); everything below is
the PyAV path.

The run's pattern, one decode per video for every clip, view and backbone::

    info = probe_video(path)                                   # header only, no decoding
    idx, valid = clip_frame_indices(info.n_frames, sampling)   # (N, T), see extract.media.sampling
    video = decode_video(path, union_frame_indices(idx, ...), size=view.decode_short_side)
    clips = video.take(idx)                                    # (N, T, H, W, 3) uint8

How :func:`decode_video` works:

* **Forward only.** Frames are decoded from the start in order and numbered by the order the
  decoder outputs them (0, 1, 2, ...), never by timestamps, so variable frame rate and
  missing or broken pts cannot shift the numbering. There is no seeking. Only the needed
  frames are converted to RGB; decoding stops right after the last needed frame (when
  audio is asked for, the rest of the file is demuxed for audio packets, but no more video
  packets are decoded).
* **Resize in the decoder's scaler** (libswscale, bilinear by default) during the RGB
  conversion, with one cached scaler context per video.
* **Threads are explicit**: ``threads=1`` decodes on the calling thread (slice threading
  with one thread); ``threads > 1`` enables frame + slice threading with that many threads.
* **Short or truncated files.** If the stream ends (or breaks) before the last needed frame,
  needed frames past the end repeat the last decoded frame, ``truncated`` is True and
  ``n_frames`` is the count actually decoded; a warning is logged.
* **Errors** are :class:`DecodeError` subclasses with a one-line message meant for the
  store's ``errors`` array; PyAV errors are converted, never leaked.
* **Timeout.** A deadline (``timeout_s``) is checked between packets and frames and raises
  :class:`DecodeTimeout`; the same value is PyAV's I/O timeout for opening and reading.
  A single FFmpeg call that never returns cannot be interrupted from Python, so the hard
  stop belongs to the caller: ``extract.run`` decodes in worker processes and kills one
  whose video overruns its time.
* **Audio** (``audio_rate``) comes from the same open: mono float32 at that rate through
  ``av.AudioResampler``, the whole track, concatenated in decode order (the track's start
  offset is ignored).
"""

from __future__ import annotations

import logging
import math
import os
import time

import av
import av.error
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from extract.media.decoded import (  # the decoders' contract; re-exported here
    CorruptVideo,
    DecodedVideo,
    DecodeError,
    DecodeTimeout,
    EmptyVideo,
    NoVideoStream,
    Size,
    VideoInfo,
    VideoNotFound,
    WindowOutsideVideo,
    target_size,
)

__all__ = [
    "DECODERS",
    "CorruptVideo",
    "DecodeError",
    "DecodeTimeout",
    "DecodedVideo",
    "EmptyVideo",
    "NoVideoStream",
    "Size",
    "VideoInfo",
    "VideoNotFound",
    "WindowOutsideVideo",
    "decode_video",
    "probe_video",
    "target_size",
]

logger = logging.getLogger(__name__)

#: The decoders ``decode_video`` can use: PyAV (the default) and, where installed, torchcodec.
DECODERS = ("pyav", "torchcodec")


_INTERPOLATIONS = {
    "bilinear": Interpolation.BILINEAR,
    "bicubic": Interpolation.BICUBIC,
    "area": Interpolation.AREA,
    "lanczos": Interpolation.LANCZOS,
}


def _check_file(path: str | os.PathLike[str]) -> None:
    """A missing path, a folder or an empty file as a DecodeError (before any library opens it)."""
    if not os.path.exists(path):
        raise VideoNotFound(path, "no such file")
    if os.path.isdir(path):
        raise VideoNotFound(path, "is a directory, not a file")
    if os.path.getsize(path) == 0:
        raise EmptyVideo(path, "file is 0 bytes")


def _open(path: str | os.PathLike[str], timeout_s: float) -> av.container.InputContainer:
    """Open a container, turning every failure into a DecodeError."""
    _check_file(path)
    try:
        return av.open(os.fspath(path), mode="r", timeout=timeout_s)
    except av.error.ExitError as e:
        raise DecodeTimeout(path, f"opening took longer than {timeout_s:g} s ({e})") from e
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise CorruptVideo(path, f"not a readable media container ({_reason(e)})") from e


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _video_stream(container: av.container.InputContainer, path: str | os.PathLike[str]):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NoVideoStream(path, f"streams found: {', '.join(kinds)}")
    return container.streams.video[0]


def _frame_rate(stream, header_duration: float | None, n_frames: int) -> float | None:
    """Average frame rate: container rates first, else frames / header duration."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return float(rate)
    if header_duration and n_frames:
        return n_frames / header_duration
    return None


def _header_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def probe_video(
    path: str | os.PathLike[str], *, count_frames: bool = False, timeout_s: float = 30.0
) -> VideoInfo:
    """Read a video's header; count frames by demuxing packets when the header has no count.

    Demuxing reads packets without decoding them, so counting is cheap.

    Args:
        path: video file.
        count_frames: count packets even when the header gives a frame count (for files
            whose header may lie).
        timeout_s: deadline for the whole probe.

    Raises:
        DecodeError: a subclass saying why the file is unusable.
    """
    deadline = time.monotonic() + timeout_s
    with _open(path, timeout_s) as container:
        stream = _video_stream(container, path)
        n_frames = int(stream.frames or 0)
        try:
            if count_frames or n_frames <= 0:
                n_frames = 0
                for packet in container.demux(stream):
                    if time.monotonic() > deadline:
                        raise DecodeTimeout(
                            path, f"counting frames took longer than {timeout_s:g} s"
                        )
                    n_frames += packet.size > 0
        except av.error.ExitError as e:
            raise DecodeTimeout(path, f"reading took longer than {timeout_s:g} s ({e})") from e
        except av.error.FFmpegError as e:
            if n_frames == 0:
                raise CorruptVideo(path, f"demuxing failed ({_reason(e)})") from e
            logger.warning("%s: demuxing stopped after %d packets: %s", path, n_frames, _reason(e))
        if n_frames == 0:
            raise EmptyVideo(path, "the video stream has no frames")
        fps = _frame_rate(stream, _header_duration(container, stream), n_frames)
        if fps is None:
            raise CorruptVideo(path, "no frame rate and no duration in the header")
        return VideoInfo(
            n_frames=n_frames,
            fps=fps,
            duration=n_frames / fps,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            has_audio=bool(container.streams.audio),
        )


class _ForwardPass:
    """One forward pass over a container: keep the needed frames, collect audio, stop early."""

    def __init__(self, path, needed, height, width, interpolation, audio_rate, deadline, timeout_s):
        self.path, self.needed = path, needed
        self.frames = np.empty((needed.size, height, width, 3), dtype=np.uint8)  # (M, H, W, 3)
        self.size = {
            "width": width,
            "height": height,
            "format": "rgb24",
            "interpolation": _INTERPOLATIONS[interpolation],
        }
        self.scaler = VideoReformatter()  # one cached swscale context for the whole video
        self.resampler = (
            av.AudioResampler(format="flt", layout="mono", rate=audio_rate) if audio_rate else None
        )
        self.audio: list[np.ndarray] = []
        self.deadline, self.timeout_s = deadline, timeout_s
        self.n_decoded = self.filled = 0
        self.last_frame: av.VideoFrame | None = None
        self.video_done = needed.size == 0
        self.at_end = False  # the video stream ended (or broke) before video_done

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            raise DecodeTimeout(
                self.path, f"no result after {self.timeout_s:g} s ({self.n_decoded} frames decoded)"
            )

    def rgb(self, frame: av.VideoFrame) -> np.ndarray:
        return self.scaler.reformat(frame, **self.size).to_ndarray()  # (H, W, 3)

    def video_packet(self, stream, packet) -> None:
        for frame in stream.decode(packet):
            self.check_deadline()
            if self.n_decoded == self.needed[self.filled]:
                self.frames[self.filled] = self.rgb(frame)
                self.filled += 1
            self.n_decoded += 1
            self.last_frame = frame
            if self.filled == self.needed.size:
                self.video_done = True
                return

    def audio_packet(self, stream, packet) -> None:
        try:
            for frame in stream.decode(packet):
                for out in self.resampler.resample(frame):
                    self.audio.append(out.to_ndarray().reshape(-1))  # (1, S) -> (S,)
        except av.error.InvalidDataError as e:
            logger.warning("%s: skipped a bad audio packet: %s", self.path, _reason(e))

    def run(self, container, vstream, astream) -> None:
        streams = [vstream] + ([astream] if self.resampler else [])
        try:
            for packet in container.demux(*streams):
                self.check_deadline()
                if packet.stream is not vstream:
                    self.audio_packet(astream, packet)
                elif not self.video_done:
                    self.video_packet(vstream, packet)
                    if self.video_done and not self.resampler:
                        return
        except av.error.ExitError as e:
            raise DecodeTimeout(self.path, f"reading took longer than {self.timeout_s:g} s") from e
        except av.error.FFmpegError as e:
            if self.n_decoded == 0 and not self.video_done:
                raise CorruptVideo(self.path, f"no frame could be decoded ({_reason(e)})") from e
            logger.warning(
                "%s: decoding stopped after %d frames: %s", self.path, self.n_decoded, _reason(e)
            )
        self.at_end = not self.video_done

    def pad(self) -> bool:
        """Fill needed frames past the end with the last frame; True if there were any."""
        if self.filled == self.needed.size:
            return False
        if self.last_frame is None:
            raise EmptyVideo(self.path, "the video stream has no decodable frames")
        self.frames[self.filled :] = self.rgb(self.last_frame)
        logger.warning(
            "%s: only %d frames exist, %d needed frames (up to %d) repeat the last one",
            self.path,
            self.n_decoded,
            self.needed.size - self.filled,
            int(self.needed[-1]),
        )
        return True

    def mono_audio(self) -> np.ndarray:
        for out in self.resampler.resample(None):  # flush the resampler
            self.audio.append(out.to_ndarray().reshape(-1))
        return np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)  # (S,)


def decode_video(
    path: str | os.PathLike[str],
    frame_indices: np.ndarray | list[int],
    size: Size = None,
    *,
    threads: int = 1,
    timeout_s: float = 60.0,
    audio_rate: int | None = None,
    interpolation: str = "bilinear",
    decoder: str = "pyav",
) -> DecodedVideo:
    """Decode the needed frames (and optionally the audio) of a video in one forward pass.

    Args:
        path: video file.
        frame_indices: frame numbers needed (any order, repeats allowed; made sorted unique),
            e.g. ``union_frame_indices`` of every sampler's indices. May be empty (audio only).
        size: None (native size), a short side in pixels (aspect kept, see
            ``extract.media.sampling.short_side_size``) or an exact ``(height, width)``.
        threads: decoder threads (>= 1).
        timeout_s: deadline for the whole call, in seconds.
        audio_rate: if set, also decode the audio track to mono float32 at this rate.
        interpolation: scaler filter: ``"bilinear"``, ``"bicubic"``, ``"area"``, ``"lanczos"``.
        decoder: ``"pyav"`` (this module) or ``"torchcodec"`` (the optional decoder,
            :mod:`extract.media.torchcodec_decode`: the same result, bilinear only; resized
            frames differ slightly, see there).

    Raises:
        DecodeError: a subclass; ``str(err)`` is one line for the store's errors array.
        ValueError: for invalid arguments.
    """
    needed = np.unique(np.asarray(frame_indices, dtype=np.int64).ravel())  # (M,) sorted
    if needed.size and needed[0] < 0:
        raise ValueError(f"frame_indices must be >= 0, got {int(needed[0])}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    if audio_rate is not None and (not isinstance(audio_rate, int) or audio_rate < 1):
        raise ValueError(f"audio_rate must be a positive integer or None, got {audio_rate!r}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")

    deadline = time.monotonic() + timeout_s
    if decoder == "torchcodec":
        from extract.media.torchcodec_decode import decode_with_torchcodec

        if interpolation != "bilinear":
            raise ValueError(f"the torchcodec decoder resizes bilinearly only, not with {interpolation!r}")
        _check_file(path)
        return decode_with_torchcodec(path, needed, size, threads=threads, timeout_s=timeout_s, deadline=deadline,
                                      audio_rate=audio_rate)
    with _open(path, timeout_s) as container:
        vstream = _video_stream(container, path)
        vstream.codec_context.thread_type = "AUTO" if threads > 1 else "SLICE"
        vstream.codec_context.thread_count = threads
        astream = container.streams.audio[0] if container.streams.audio else None
        want_audio = audio_rate is not None and astream is not None
        height, width = target_size(
            size, vstream.codec_context.height, vstream.codec_context.width
        )
        run = _ForwardPass(
            path,
            needed,
            height,
            width,
            interpolation,
            audio_rate if want_audio else None,
            deadline,
            timeout_s,
        )
        run.run(container, vstream, astream)
        truncated = run.pad()
        header_frames = int(vstream.frames or 0)
        if run.at_end:
            n_frames = run.n_decoded
        else:
            n_frames = max(header_frames, run.n_decoded) if header_frames else None
        fps = _frame_rate(vstream, _header_duration(container, vstream), n_frames or 0)
        return DecodedVideo(
            frames=run.frames,
            frame_numbers=needed,
            fps=math.nan if fps is None else fps,
            n_frames=n_frames,
            duration=n_frames / fps if n_frames and fps else None,
            has_audio=astream is not None,
            audio=run.mono_audio() if want_audio else None,
            audio_rate=audio_rate if want_audio else None,
            truncated=truncated,
            n_decoded=run.n_decoded,
        )
