"""Decoding against tiny lossless videos (libx264rgb, crf 0): decoded frames must be exact."""

import logging
import types
from fractions import Fraction

import av
import numpy as np
import pytest

import extract.media.decode as decode_mod
from extract.errors import ExtractError
from extract.media.decode import (
    CorruptVideo,
    DecodeError,
    DecodeTimeout,
    EmptyVideo,
    NoVideoStream,
    VideoNotFound,
    decode_video,
    probe_video,
)
from extract.media.sampling import ClipSampling, clip_frame_indices, union_frame_indices
from extract.media.transforms import short_side_resize

N, H, W, FPS = 20, 48, 64, 10
TONE_HZ, AUDIO_RATE, AUDIO_S = 440.0, 44100, 1.5


def _write(path, frames, fps=FPS, pts_ms=None, audio=None, container_options=None):
    """Private lossless writer: libx264rgb crf 0, optional irregular pts (ms) and AAC audio."""
    with av.open(str(path), "w", options=container_options or {}) as c:
        video = c.add_stream("libx264rgb", rate=fps, options={"crf": "0", "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "rgb24"
        video.codec_context.thread_count = 1
        if pts_ms is not None:
            video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        if audio is not None:  # every stream must exist before the first packet is muxed
            sound = c.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "mono"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            for packet in video.encode(frame):
                c.mux(packet)
        for packet in video.encode():
            c.mux(packet)
        if audio is not None:
            frame = av.AudioFrame.from_ndarray(
                audio[None].astype(np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = AUDIO_RATE, 0
            for packet in sound.encode(frame):
                c.mux(packet)
            for packet in sound.encode():
                c.mux(packet)


@pytest.fixture(scope="module")
def frames():
    return np.random.default_rng(0).integers(0, 256, (N, H, W, 3), dtype=np.uint8)  # distinct noise


@pytest.fixture(scope="module")
def videos(tmp_path_factory, frames):
    d = tmp_path_factory.mktemp("videos")
    t = np.arange(int(AUDIO_RATE * AUDIO_S)) / AUDIO_RATE
    paths = {
        "plain": d / "plain.mp4",
        "faststart": d / "faststart.mp4",
        "mkv": d / "plain.mkv",
        "vfr": d / "vfr.mp4",
        "audio": d / "audio.mp4",
    }
    _write(paths["plain"], frames)
    _write(paths["faststart"], frames, container_options={"movflags": "faststart"})
    _write(paths["mkv"], frames)  # Matroska headers carry no frame count
    _write(
        paths["vfr"],
        frames,
        pts_ms=[
            0,
            30,
            100,
            110,
            200,
            250,
            400,
            410,
            420,
            500,
            600,
            610,
            700,
            800,
            805,
            900,
            1000,
            1100,
            1150,
            1200,
        ],
    )
    _write(paths["audio"], frames, audio=0.5 * np.sin(2 * np.pi * TONE_HZ * t))
    return paths


@pytest.mark.parametrize("kind", ["plain", "faststart", "mkv", "vfr", "audio"])
def test_all_frames_decode_exactly(videos, frames, kind):
    out = decode_video(videos[kind], np.arange(N))
    assert out.frames.shape == (N, H, W, 3) and out.frames.dtype == np.uint8
    np.testing.assert_array_equal(out.frames, frames)  # VFR too: numbered by output order
    assert out.n_decoded == N and not out.truncated


def test_only_needed_frames_are_decoded(videos, frames, monkeypatch):
    converted = []
    to_rgb = decode_mod._ForwardPass.rgb
    monkeypatch.setattr(
        decode_mod._ForwardPass, "rgb", lambda self, f: converted.append(1) or to_rgb(self, f)
    )
    out = decode_video(videos["plain"], [7, 3, 7])  # any order, repeats allowed
    assert len(converted) == 2  # only the needed frames go through the scaler
    np.testing.assert_array_equal(out.frame_numbers, [3, 7])
    np.testing.assert_array_equal(out.frames, frames[[3, 7]])
    assert out.n_decoded == 8  # frames 0..7, never to the end
    assert out.n_frames == N  # header count (the end was not reached)


def test_sampled_clips_gather_from_one_decode(videos, frames):
    n = probe_video(videos["plain"]).n_frames
    uni, _ = clip_frame_indices(n, ClipSampling("uniform", 3, 4, 2))
    tsn, _ = clip_frame_indices(n, ClipSampling("tsn", 4, 1, 1))
    out = decode_video(videos["plain"], union_frame_indices(uni, tsn))
    np.testing.assert_array_equal(out.take(uni), frames[uni])  # (3, 4) -> (3, 4, H, W, 3)
    np.testing.assert_array_equal(out.take(tsn), frames[tsn])
    with pytest.raises(ValueError, match="not decoded"):
        out.take(np.array([[1]]))


def test_threads_give_the_same_frames(videos, frames):
    out = decode_video(videos["plain"], [0, 19], threads=2)
    np.testing.assert_array_equal(out.frames, frames[[0, 19]])


def test_scaler_resize(tmp_path):
    y, x = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    smooth = np.stack([(200 * (x + y) / 2 + 20 * i) for i in range(4)]).astype(
        np.uint8
    )  # (4, H, W)
    smooth = np.repeat(smooth[..., None], 3, axis=-1)  # (4, H, W) -> (4, H, W, 3)
    path = tmp_path / "smooth.mp4"
    _write(path, smooth)
    out = decode_video(path, [0, 3], size=24)  # short side 24 of 48x64 -> 24x32
    assert out.frames.shape == (2, 24, 32, 3)
    reference = short_side_resize(smooth[[0, 3]], 24)
    assert np.abs(out.frames.astype(int) - reference).mean() < 2.0
    assert decode_video(path, [1], size=(30, 20), interpolation="area").frames.shape == (
        1,
        30,
        20,
        3,
    )


def test_probe(videos):
    for kind in ("plain", "mkv", "vfr"):  # mkv: counted by demuxing packets
        info = probe_video(videos[kind])
        assert (info.n_frames, info.width, info.height, info.has_audio) == (N, W, H, False)
    assert probe_video(videos["plain"], count_frames=True).n_frames == N
    assert probe_video(videos["plain"]).fps == pytest.approx(FPS)
    assert probe_video(videos["plain"]).duration == pytest.approx(N / FPS)
    vfr = probe_video(videos["vfr"])
    assert vfr.fps == pytest.approx(N / 1.3)  # average rate: 20 frames over 1.3 s
    assert probe_video(videos["audio"]).has_audio


def test_truncated_file_is_clamped_with_a_warning(videos, frames, tmp_path, caplog):
    data = videos["faststart"].read_bytes()  # index first: the cut loses frames, not the index
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="extract.media.decode"):
        out = decode_video(path, [0, 2, 19])
    assert out.truncated and 2 < out.n_frames < N and out.n_decoded == out.n_frames
    np.testing.assert_array_equal(out.frames[:2], frames[[0, 2]])
    np.testing.assert_array_equal(out.frames[2], frames[out.n_frames - 1])  # last real frame
    assert "repeat the last one" in caplog.text


def test_truncated_file_without_index_is_corrupt(videos, tmp_path):
    data = videos["plain"].read_bytes()  # moov atom at the end: cut in half, no index
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptVideo, match="cut.mp4"):
        decode_video(path, [0])


def _bad_file(tmp_path, kind):
    path = tmp_path / {"srt": "subs.srt", "dir": "folder"}.get(kind, f"{kind}.mp4")
    if kind == "random":
        path.write_bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is a text file, not a video\n" * 20)
    elif kind == "srt":
        path.write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n\n")
    elif kind == "audio_only":
        with av.open(str(path), "w") as c:
            s = c.add_stream("aac", rate=16000)
            s.layout = "mono"
            f = av.AudioFrame.from_ndarray(
                np.zeros((1, 2048), np.float32), format="fltp", layout="mono"
            )
            f.sample_rate, f.pts = 16000, 0
            for p in [*s.encode(f), *s.encode()]:
                c.mux(p)
    elif kind == "dir":
        path.mkdir()
    return path


@pytest.mark.parametrize(
    "kind,error,words",
    [
        ("random", CorruptVideo, "not a readable media container"),
        ("empty", EmptyVideo, "0 bytes"),
        ("text", CorruptVideo, "not a readable media container"),
        ("srt", NoVideoStream, "streams found: subtitle"),
        ("audio_only", NoVideoStream, "streams found: audio"),
        ("missing", VideoNotFound, "no such file"),
        ("dir", VideoNotFound, "directory"),
    ],
)
def test_bad_files_raise_the_right_error(tmp_path, kind, error, words):
    path = _bad_file(tmp_path, kind)
    for call in (lambda: decode_video(path, [0]), lambda: probe_video(path)):
        with pytest.raises(error) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and str(path) in message and words in message
        assert isinstance(info.value, DecodeError) and isinstance(info.value, ExtractError)
        assert info.value.path == str(path)


def test_timeout_between_packets(videos, monkeypatch):
    clock = iter(range(0, 10**6, 1))  # every reading of the clock is one second later
    monkeypatch.setattr(decode_mod, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    with pytest.raises(DecodeTimeout, match="no result after 5 s"):
        decode_video(videos["plain"], [19], timeout_s=5)


def test_no_audio_track(videos):
    out = decode_video(videos["plain"], [0], audio_rate=16000)
    assert out.has_audio is False and out.audio is None and out.audio_rate is None


def test_audio_tone_duration_and_frequency(videos, frames):
    out = decode_video(videos["audio"], [5], audio_rate=16000)
    np.testing.assert_array_equal(out.frames[0], frames[5])  # video untouched by the audio path
    assert out.has_audio and out.audio_rate == 16000
    assert out.audio.dtype == np.float32 and out.audio.ndim == 1
    assert abs(len(out.audio) / 16000 - AUDIO_S) < 0.05  # AAC pads its last frame
    spectrum = np.abs(np.fft.rfft(out.audio * np.hanning(len(out.audio))))
    peak_hz = np.fft.rfftfreq(len(out.audio), 1 / 16000)[spectrum.argmax()]
    assert abs(peak_hz - TONE_HZ) < 2.0
    middle = out.audio[len(out.audio) // 4 : -len(out.audio) // 4]  # away from AAC edge effects
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)  # amplitude 0.5
    assert out.n_decoded == 6  # audio is read to the end, video only up to frame 5


def test_audio_only_decode_and_audio_off(videos):
    out = decode_video(videos["audio"], [], audio_rate=8000)
    assert out.frames.shape == (0, H, W, 3) and out.n_decoded == 0
    assert abs(len(out.audio) / 8000 - AUDIO_S) < 0.05
    off = decode_video(videos["audio"], [0])
    assert off.has_audio and off.audio is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"frame_indices": [-1]}, ">= 0"),
        ({"size": "big"}, "size"),
        ({"threads": 0}, "threads"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"audio_rate": 0}, "audio_rate"),
        ({"interpolation": "nearest"}, "interpolation"),
    ],
)
def test_bad_arguments(videos, kwargs, match):
    args = {"frame_indices": [0], **kwargs}
    with pytest.raises(ValueError, match=match):
        decode_video(videos["plain"], **args)
