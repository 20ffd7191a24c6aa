"""Write RGB frames (and optionally a mono audio track) to a video file with PyAV.

One function, :func:`write_video`, used by the demo generator and by tests that need real
video files::

    write_video("clip.mp4", frames, fps=25)                            # H.264, yuv420p
    write_video("clip.mp4", frames, fps=25, audio=wave, sample_rate=16000)   # + AAC
    write_video("exact.mp4", frames, fps=25, lossless=True)            # libx264rgb crf 0

Lossy video is ``libx264`` in ``yuv420p`` (the pixel format every decoder plays; it needs an
even width and height). Lossless video is ``libx264rgb`` with ``crf=0`` in ``rgb24``:
decoding it with PyAV and ``frame.to_ndarray(format="rgb24")`` gives back the input frames
bit for bit (the stream's pixel format reads as ``gbrp``, a lossless reordering), so tests
can compare decoded frames exactly, the pytorchvideo way. Audio is AAC (FFmpeg's native
encoder, planar float), mono, at any rate the encoder accepts (``AAC_SAMPLE_RATES``); the
decoded track is a few hundred samples longer than the input (the last AAC frame is
padded) and not bit-exact.

Packets are muxed in time order (video and audio interleaved). The file is written under
a unique hidden temporary name next to ``path`` (``.NAME.<random>.partial.mp4``) and
renamed into place only when complete, so a crash never leaves a half-written file under
the final name, and two processes writing the same file do not collide.
"""

from __future__ import annotations

import logging
import os
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

AAC_SAMPLE_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000,
                    64000, 88200, 96000)
AAC_FRAME_SIZE = 1024  # samples per AAC-LC frame; the last frame may be shorter


def _check_frames(frames: np.ndarray, lossless: bool) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(
            f"write_video: frames must be a uint8 numpy array, got "
            f"{type(frames).__name__} {getattr(frames, 'dtype', '')}; convert with "
            "np.clip(x, 0, 255).astype(np.uint8)"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(
            f"write_video: frames must have shape (T, H, W, 3) with T >= 1, got {frames.shape}"
        )
    height, width = frames.shape[1:3]
    if not lossless and (height % 2 or width % 2):
        raise ValueError(
            f"write_video: yuv420p needs an even height and width, got {height}x{width}; "
            "crop or pad the frames, or pass lossless=True (rgb24 has no such limit)"
        )


def _check_audio(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1 or audio.size == 0 or not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(
            f"write_video: audio must be a non-empty 1-D float array (mono samples in "
            f"[-1, 1]), got shape {audio.shape} dtype {audio.dtype}"
        )
    if not np.all(np.isfinite(audio)):
        raise ValueError("write_video: audio contains NaN or inf samples")
    if sample_rate not in AAC_SAMPLE_RATES:
        raise ValueError(
            f"write_video: the AAC encoder does not accept sample_rate={sample_rate}; "
            f"use one of {AAC_SAMPLE_RATES}"
        )
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    lossless: bool = False,
    *,
    crf: int = 23,
    preset: str = "superfast",
    threads: int = 1,
) -> Path:
    """Encode ``frames`` (and ``audio``) into a video file, atomically.

    Args:
        path: output file; the container follows the suffix (``.mp4``, ``.mkv``, ``.mov``).
            Parent folders are created. An existing file is replaced.
        frames: ``(T, H, W, 3)`` uint8 RGB frames.
        fps: frame rate; stored as the nearest fraction with a denominator <= 1001
            (29.97 -> 2997/100; pass ``Fraction(30000, 1001)`` or ``30000 / 1001`` for NTSC).
        audio: mono samples, 1-D float in [-1, 1] (values outside are clipped), or ``None``
            to write no audio track at all.
        sample_rate: audio sample rate in Hz; one of ``AAC_SAMPLE_RATES``.
        lossless: ``libx264rgb`` with ``crf=0`` (bit-exact frames) instead of ``libx264``
            yuv420p; ``crf`` and ``preset`` are then ignored (preset ``ultrafast``).
        crf: x264 constant rate factor for lossy video (0-51, lower = better).
        preset: x264 preset for lossy video.
        threads: encoder threads (1 is fastest for small clips on a busy machine).

    Returns:
        The path written.

    Raises:
        ValueError: frames, audio or settings that cannot be encoded (the message says why).
    """
    _check_frames(frames, lossless)
    if not fps > 0:
        raise ValueError(f"write_video: fps must be > 0, got {fps}")
    if not 0 <= crf <= 51:
        raise ValueError(f"write_video: crf must be in 0..51, got {crf}")
    samples = _check_audio(audio, sample_rate) if audio is not None else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.partial{path.suffix}")
    rate = Fraction(fps).limit_denominator(1001)
    n_frames, height, width = frames.shape[:3]
    try:
        with av.open(str(tmp), mode="w") as container:
            video = container.add_stream("libx264rgb" if lossless else "libx264", rate=rate)
            video.width, video.height = width, height
            video.pix_fmt = "rgb24" if lossless else "yuv420p"
            video.options = (
                {"crf": "0", "preset": "ultrafast"}
                if lossless
                else {"crf": str(int(crf)), "preset": preset}
            )
            video.codec_context.thread_count = threads
            sound = None
            if samples is not None:
                sound = container.add_stream("aac", rate=sample_rate)
                sound.layout = "mono"
            audio_pos = 0
            for i in range(n_frames):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                frame.pts = i
                container.mux(video.encode(frame))
                if sound is not None:  # audio up to the end of this video frame
                    until = len(samples) if i == n_frames - 1 else int((i + 1) / rate * sample_rate)
                    audio_pos = _encode_audio(container, sound, samples, audio_pos, until,
                                              sample_rate)
            container.mux(video.encode(None))
            if sound is not None:
                _encode_audio(container, sound, samples, audio_pos, len(samples), sample_rate)
                container.mux(sound.encode(None))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.debug("wrote %s: %d frames %dx%d at %s fps, audio=%s", path, n_frames, width,
                 height, rate, samples is not None)
    return path


def _encode_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    samples: np.ndarray,
    start: int,
    until: int,
    sample_rate: int,
) -> int:
    """Encode whole AAC frames of ``samples[start:until]`` (a short last frame only at the end).

    Returns the position after the last sample encoded.
    """
    pos = start
    while pos < until and (until - pos >= AAC_FRAME_SIZE or until == len(samples)):
        chunk = samples[pos:pos + AAC_FRAME_SIZE]
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")  # (1, n)
        frame.sample_rate = sample_rate
        frame.pts = pos
        container.mux(stream.encode(frame))
        pos += len(chunk)
    return pos
