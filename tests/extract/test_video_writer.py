"""write_video: exact lossless round trip, stream layout, audio duration, atomic writes, errors."""

from fractions import Fraction

import av
import numpy as np
import pytest

from extract.media.video_writer import write_video


def _decode(path):
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        audio = None
        if container.streams.audio:
            with av.open(str(path)) as again:
                audio = np.concatenate([f.to_ndarray() for f in again.decode(audio=0)], axis=1)
        return frames, audio, container


def test_lossless_round_trip_is_exact_and_has_no_audio(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (7, 33, 47, 3), dtype=np.uint8)  # odd sizes are fine in rgb
    path = write_video(tmp_path / "exact.mp4", frames, fps=25, lossless=True)
    decoded, audio, container = _decode(path)
    assert decoded.shape == frames.shape
    assert np.array_equal(decoded, frames)
    assert audio is None and len(container.streams.audio) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exact.mp4"]  # no temp file left


def test_lossy_video_with_audio_streams_and_durations(tmp_path):
    sr, seconds, fps = 16000, 1.2, 25
    t = np.arange(int(seconds * sr)) / sr
    audio = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    gradient = np.linspace(0, 255, 64, dtype=np.float32)
    frames = np.broadcast_to(gradient[None, None, :, None], (30, 48, 64, 3)).astype(np.uint8)
    path = write_video(tmp_path / "sub" / "clip.mp4", frames, fps, audio, sr)
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and video.codec_context.pix_fmt == "yuv420p"
        assert (video.codec_context.width, video.codec_context.height) == (64, 48)
        assert video.average_rate == 25
        assert sound.codec_context.name == "aac" and sound.sample_rate == sr
        assert sound.layout.name == "mono"
    decoded, samples, _ = _decode(path)
    assert decoded.shape == (30, 48, 64, 3)
    assert np.abs(decoded.astype(int) - frames).mean() < 3  # lossy but close
    assert samples.shape[0] == 1
    assert abs(samples.shape[1] / sr - seconds) < 0.07  # AAC pads the last frame
    rms = np.sqrt(np.mean(samples[0, 2000:16000] ** 2))
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.03


def test_fractional_fps_is_kept(tmp_path):
    frames = np.zeros((3, 16, 16, 3), np.uint8)
    path = write_video(tmp_path / "ntsc.mp4", frames, fps=30000 / 1001)
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == Fraction(30000, 1001)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"frames": np.zeros((2, 15, 16, 3), np.uint8)}, "even height and width"),
        ({"frames": np.zeros((2, 16, 16, 3), np.float32)}, "uint8"),
        ({"frames": np.zeros((2, 16, 16), np.uint8)}, "(T, H, W, 3)"),
        ({"audio": np.zeros(100, np.float32), "sample_rate": 10000}, "sample_rate=10000"),
        ({"audio": np.zeros((2, 100), np.float32)}, "1-D float"),
        ({"audio": np.full(100, np.nan, np.float32)}, "NaN"),
        ({"fps": 0}, "fps"),
    ],
)
def test_bad_arguments_raise_clear_errors(tmp_path, kwargs, message):
    args = {"frames": np.zeros((2, 16, 16, 3), np.uint8), "fps": 25}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        write_video(tmp_path / "bad.mp4", **args)
    assert list(tmp_path.iterdir()) == []
