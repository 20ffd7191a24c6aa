"""The optional torchcodec decoder: what :func:`extract.media.decode.decode_video` returns, from torchcodec.

``decode_video(..., decoder="torchcodec")`` (``extract.run --decoder torchcodec``) lands here.
It returns the same :class:`~extract.media.decode.DecodedVideo` as the PyAV path for the same
request (frames ``(M, H, W, 3)`` uint8 RGB, frame numbers, fps, frame count, audio, truncation)
and raises the same :class:`~extract.media.decode.DecodeError` subclasses. What differs:

* **How frames are reached.** torchcodec's ``VideoDecoder`` in ``exact`` seek mode scans the
  file's packets once at open (demuxing, no decoding) and numbers frames in presentation
  order, which is the decoder's output order that PyAV counts; ``get_frames_at`` then seeks
  to the key frame before a needed frame when that skips decoding. Frames are numbered the
  same for every well-formed file; a file whose timestamps are broken may number differently.
* **Resizing.** torchcodec converts to RGB at the coded size, then scales the RGB picture
  (libswscale, bilinear, its ``Resize`` decoder transform); PyAV converts and scales in one
  libswscale call. At the coded size (``size=None``) the frames are identical; resized, they
  differ by about 1-2 grey levels on average and up to ~120 at sharp colour edges, where the
  one-step path upsamples chroma at the target size (measured on the demo videos; see
  extract/README.md, *Decoders*). The decoder is therefore part of a feature set's provenance.
  Only ``interpolation="bilinear"`` exists here.
* **Audio** comes from torchcodec's ``AudioDecoder`` (a second open of the file): mono float32
  at ``audio_rate`` through libswresample, the whole track, as PyAV's ``av.AudioResampler``
  gives it (equal to ~1e-7 on the demo videos).
* **Timeout.** The deadline is checked after opening and between batches of
  :data:`FRAMES_PER_CALL` frames; one torchcodec call cannot be interrupted (the decode workers'
  hard kill covers it, as for PyAV). There is no I/O timeout.
* ``n_decoded`` is the stream position PyAV would have reached (frames up to the last needed
  one, or every frame when the file ends early): torchcodec does not report how many frames it
  decoded, and after a seek it decodes fewer.

torchcodec needs FFmpeg's shared libraries (4 to 8) on the system; :func:`require_torchcodec`
says what is missing in one line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterator

import numpy as np

from extract.errors import ExtractError
from extract.media.decoded import (
    CorruptVideo,
    DecodedVideo,
    DecodeTimeout,
    EmptyVideo,
    NoVideoStream,
    target_size,
)

logger = logging.getLogger(__name__)

#: Frames asked of torchcodec per call; the deadline is checked between calls.
FRAMES_PER_CALL = 32
INSTALL_HINT = (
    "pip install 'videofeat[decoders]' (torchcodec) and FFmpeg's shared libraries 4-8 "
    "(Debian/Ubuntu: apt-get install libavcodec59 libavformat59 libavutil57 libavdevice59 libavfilter8 "
    "libswscale6 libswresample4, or apt-get install ffmpeg)"
)


def require_torchcodec() -> str:
    """The torchcodec version, after checking that it imports with its FFmpeg libraries.

    Raises:
        ExtractError: one line saying why torchcodec cannot be used and how to install it.
    """
    try:
        import torchcodec
        import torchcodec.decoders  # noqa: F401  (loads the FFmpeg-linked core)
    except Exception as err:  # ImportError, or RuntimeError/OSError when no FFmpeg library loads
        first = " ".join(str(err).split("\n")[0].split())[:200] or type(err).__name__
        raise ExtractError(f"--decoder torchcodec: torchcodec cannot be imported ({type(err).__name__}: {first}); "
                           f"install it with {INSTALL_HINT}, or use --decoder pyav") from None
    return str(getattr(torchcodec, "__version__", "unknown"))


def _detail(err: BaseException) -> str:
    """torchcodec's message without its C++ source location, on one line."""
    text = str(err).split("\n")[0]
    text = re.sub(r"^[\w:]+, \S+\.cpp:\d+, ", "", text)
    return " ".join(text.split()) or type(err).__name__


def _open_video(path: str, threads: int, size):
    """``(reader, (height, width))``: a VideoDecoder at the target size; DecodeError on failure.

    A short-side ``size`` needs the coded size first: a header-only open (``approximate`` seek
    mode, no scan) reads it, then the decoder opens with the resize it implies.
    """
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    def open_with(seek_mode, transforms=None):
        try:
            return VideoDecoder(path, seek_mode=seek_mode, dimension_order="NHWC", num_ffmpeg_threads=threads,
                                transforms=transforms)
        except ValueError as e:
            if "best video stream is unknown" in str(e):
                raise NoVideoStream(path, "torchcodec found no video stream") from e
            raise CorruptVideo(path, f"torchcodec cannot read it ({_detail(e)})") from e
        except RuntimeError as e:
            if "Could not open input file" in str(e):
                raise CorruptVideo(path, f"not a readable media container ({_detail(e)})") from e
            raise CorruptVideo(path, f"torchcodec cannot read it ({_detail(e)})") from e

    if size is None:
        reader = _Reader(lambda: open_with("exact"))
        return reader, (reader.decoder.metadata.height, reader.decoder.metadata.width)
    meta = open_with("approximate").metadata
    if not meta.height or not meta.width:
        raise CorruptVideo(path, "the video stream has no frame size")
    height, width = target_size(size, meta.height, meta.width)
    resize = None if (height, width) == (meta.height, meta.width) else [Resize((height, width))]
    return _Reader(lambda: open_with("exact", resize)), (height, width)


class _Reader:
    """Frames by number from a VideoDecoder, opened again after a decoding error (its state is lost then)."""

    def __init__(self, open_decoder) -> None:
        self.open_decoder = open_decoder
        self.decoder = open_decoder()

    def get(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """(m,) frame numbers -> (m, H, W, 3) uint8; RuntimeError where one cannot be decoded."""
        try:
            return self.decoder.get_frames_at(list(map(int, indices))).data.numpy()  # (m, H, W, 3)
        except RuntimeError:
            self.decoder = self.open_decoder()
            raise


def _audio(path: str, audio_rate: int | None) -> tuple[bool, np.ndarray | None]:
    """``(has_audio, mono float32 at audio_rate or None)``."""
    from torchcodec.decoders import AudioDecoder

    try:
        decoder = AudioDecoder(path, sample_rate=audio_rate, num_channels=1)
    except (ValueError, RuntimeError):  # no audio stream
        return False, None
    if audio_rate is None:
        return True, None
    try:
        samples = decoder.get_all_samples().data  # (1, S) float32
    except RuntimeError as e:
        logger.warning("%s: the audio track could not be decoded: %s", path, _detail(e))
        return True, np.zeros(0, np.float32)
    return True, samples.numpy().reshape(-1).astype(np.float32, copy=False)  # (1, S) -> (S,)


def _fill(reader: _Reader, path: str, indices: np.ndarray, out: np.ndarray, deadline: float,
          timeout_s: float) -> int | None:
    """Decode the frames ``indices`` (sorted) into ``out``; None when all decode, else where the stream ends.

    Where decoding breaks (a cut or damaged file), the stream ends before the broken frame, as on
    the PyAV path: the frames before it are searched back to the last one that decodes, and the
    frame count up to it is returned (``out`` is filled up to there).
    """
    for start in range(0, indices.size, FRAMES_PER_CALL):
        if time.monotonic() > deadline:
            raise DecodeTimeout(path, f"no result after {timeout_s:g} s ({start} needed frames decoded)")
        part = indices[start:start + FRAMES_PER_CALL]
        try:
            out[start:start + part.size] = reader.get(part)  # (m, H, W, 3)
            continue
        except RuntimeError as e:
            error = e
        done = int(indices[start - 1]) if start else -1  # the last frame decoded
        for j, index in enumerate(part.tolist()):  # one by one, to the first broken frame
            try:
                out[start + j] = reader.get([index])[0]  # (1, H, W, 3) -> (H, W, 3)
                done = index
            except RuntimeError as e:
                error = e
                break
        else:  # every frame decoded on its own after all
            continue
        last = done
        for k in range(index - 1, done, -1):  # the frames between the last good and the broken one
            if time.monotonic() > deadline:
                raise DecodeTimeout(path, f"no result after {timeout_s:g} s (searching the end of a broken stream)")
            try:
                reader.get([k])
            except RuntimeError:
                continue
            last = k
            break
        if last < 0:
            raise CorruptVideo(path, f"no frame could be decoded ({_detail(error)})")
        logger.warning("%s: decoding stopped after %d frames: %s", path, last + 1, _detail(error))
        return last + 1
    return None


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch on one thread inside (restored after): torchcodec hands frames over through torch ops."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def decode_with_torchcodec(path: str | os.PathLike[str], needed: np.ndarray, size, *, threads: int,
                           timeout_s: float, deadline: float, audio_rate: int | None) -> DecodedVideo:
    """:func:`extract.media.decode.decode_video` through torchcodec (arguments already checked there).

    torch runs on one thread meanwhile (restored after), as in a decode worker: with the model's
    threads (in-process decoding) a call was 4x slower on the loaded 2-core machine.

    Args:
        path: an existing, non-empty video file.
        needed: (M,) sorted unique frame numbers.
        size: as ``decode_video``'s ``size``.
        threads: FFmpeg decoder threads.
        timeout_s: the limit, for messages; ``deadline``: ``time.monotonic()`` past which to stop.
        audio_rate: mono float32 audio at this rate, or None.
    """
    with _one_torch_thread():
        return _decode(os.fspath(path), needed, size, threads, timeout_s, deadline, audio_rate)


def _decode(path: str, needed: np.ndarray, size, threads: int, timeout_s: float, deadline: float,
            audio_rate: int | None) -> DecodedVideo:
    reader, (height, width) = _open_video(path, threads, size)
    meta = reader.decoder.metadata
    count = int(meta.num_frames_from_content or 0)  # exact mode: the packets of the scan
    if count == 0 and needed.size:
        raise EmptyVideo(path, "the video stream has no decodable frames")
    frames = np.empty((needed.size, height, width, 3), dtype=np.uint8)  # (M, H, W, 3)
    count = _fill(reader, path, needed[needed < count], frames, deadline, timeout_s) or count
    truncated = bool(needed.size) and needed[-1] >= count
    if truncated:  # needed frames past the end repeat the last frame, as on the PyAV path
        last = np.empty((1, height, width, 3), dtype=np.uint8)  # (1, H, W, 3)
        while end := _fill(reader, path, np.array([count - 1]), last, deadline, timeout_s):
            count = end  # the last frame of the scan is broken: the stream ends earlier
        real = int(np.searchsorted(needed, count))  # needed frames that exist
        frames[real:] = last[0]
        logger.warning("%s: only %d frames exist, %d needed frames (up to %d) repeat the last one",
                       path, count, needed.size - real, int(needed[-1]))
    header = int(meta.num_frames_from_header or 0)
    if truncated:
        n_frames, n_decoded = count, count
    else:
        n_decoded = int(needed[-1]) + 1 if needed.size else 0
        n_frames = max(header, n_decoded) if header else None
    fps = meta.average_fps or meta.average_fps_from_header  # frames over the scanned duration, as PyAV's average
    has_audio, audio = _audio(path, audio_rate)
    return DecodedVideo(
        frames=frames,
        frame_numbers=needed,
        fps=math.nan if not fps else float(fps),
        n_frames=n_frames,
        duration=n_frames / fps if n_frames and fps else None,
        has_audio=has_audio,
        audio=audio,
        audio_rate=audio_rate if audio is not None else None,
        truncated=truncated,
        n_decoded=n_decoded,
    )
