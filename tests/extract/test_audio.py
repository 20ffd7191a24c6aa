"""Audio: windows aligned to clips, mel filterbank and log-mel against numpy, tones, no audio."""

import numpy as np
import pytest
import torch

from extract.media.audio import (
    AudioSettings,
    audio_windows,
    hz_to_mel,
    log_mel,
    mel_center_frequencies,
    mel_filterbank,
    mel_to_hz,
    vggish_patches,
)
from extract.media.decode import decode_video
from extract.media.sampling import ClipSampling, clip_frame_indices, clip_times, union_frame_indices
from extract.media.video_writer import write_video

SR = 16000


def tone(freq, seconds, sr=SR):
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def nearest_band(freq, settings):
    return int(np.abs(mel_center_frequencies(settings) - freq).argmin())


def reference_filterbank(sr, n_fft, n_mels, f_min, f_max):
    """Loop-by-loop triangles in the mel domain (VGGish's definition)."""
    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    edges = [mel(f_min) + i * (mel(f_max) - mel(f_min)) / (n_mels + 1) for i in range(n_mels + 2)]
    bank = np.zeros((n_fft // 2 + 1, n_mels))
    for k in range(1, n_fft // 2 + 1):  # bin 0 (DC) gets no weight
        m = mel(k * sr / n_fft)
        for j in range(n_mels):
            lo, c, hi = edges[j], edges[j + 1], edges[j + 2]
            if lo < m <= c:
                bank[k, j] = (m - lo) / (c - lo)
            elif c < m < hi:
                bank[k, j] = (hi - m) / (hi - c)
    return bank


def test_mel_scale_by_hand():
    assert hz_to_mel(1000.0) == pytest.approx(999.99, abs=0.01)  # HTK: 1000 Hz ~ 1000 mel
    assert hz_to_mel(700.0) == pytest.approx(1127.0 * np.log(2.0))
    np.testing.assert_allclose(mel_to_hz(hz_to_mel([125.0, 440.0, 7500.0])), [125, 440, 7500])


def test_filterbank_hand_checked_values():
    # 8 kHz, 8-point FFT: bins at 0, 1, 2, 3, 4 kHz = 0, 999.99, 1521.36, 1876.50, 2146.08 mel;
    # 2 bands, edges every 2146.08 / 3 = 715.36 mel.
    bank = mel_filterbank(8000, 8, 2, 0.0, 4000.0)
    expected = [[0, 0], [0.602113, 0.397887], [0, 0.873280], [0, 0.376891], [0, 0]]
    np.testing.assert_allclose(bank, expected, atol=1e-6)


def test_filterbank_matches_reference_and_sums_to_one():
    s = AudioSettings()
    bank = mel_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.f_min, s.f_max)
    assert bank.shape == (257, 64) and not bank.flags.writeable
    np.testing.assert_allclose(
        bank, reference_filterbank(16000, 512, 64, 125.0, 7500.0), atol=1e-12
    )
    assert mel_filterbank(16000, 512, 64, 125.0, 7500.0) is bank  # cached
    freqs = np.arange(257) * 16000 / 512
    centres = mel_center_frequencies(s)
    inside = (freqs >= centres[0]) & (freqs <= centres[-1])
    np.testing.assert_allclose(bank[inside].sum(axis=1), 1.0, atol=1e-9)  # triangles overlap
    outside = (freqs <= 125.0) | (freqs >= 7500.0)
    assert np.all(bank[outside] == 0)
    assert bank.max(axis=0).min() > 0  # every band sees at least one FFT bin


def numpy_log_mel(wave, s):
    """Direct framing + numpy FFT, one frame at a time."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(s.win_length) / s.win_length)  # periodic
    bank = reference_filterbank(s.sample_rate, s.n_fft, s.n_mels, s.f_min, s.f_max)
    n_frames = 1 + (len(wave) - s.win_length) // s.hop
    out = np.empty((n_frames, s.n_mels))
    for i in range(n_frames):
        frame = wave[i * s.hop : i * s.hop + s.win_length].astype(np.float64) * window
        spec = np.abs(np.fft.rfft(frame, n=s.n_fft)) ** s.power
        out[i] = np.log(spec @ bank + s.log_offset)
    return out


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_log_mel_matches_numpy_batched(power):
    s = AudioSettings(power=power)
    rng = np.random.default_rng(0)
    waves = (0.1 * rng.standard_normal((2, 3, 2000))).astype(np.float32)
    mel = log_mel(waves, s)
    assert mel.shape == (2, 3, 1 + (2000 - 400) // 160, 64) and mel.dtype == torch.float32
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(mel[i, j].numpy(), numpy_log_mel(waves[i, j], s), atol=2e-4)


@pytest.mark.parametrize("freq", [1000.0, 440.0])
def test_tone_peaks_at_nearest_band(freq):
    s = AudioSettings()
    mel = log_mel(tone(freq, 1.0), s)  # (F, 64)
    assert mel.shape == (1 + (16000 - 400) // 160, 64)
    assert set(mel.argmax(dim=-1).tolist()) == {nearest_band(freq, s)}


def test_windows_line_up_with_clip_times():
    fps = 25
    idx = np.array([np.arange(0, 50), np.arange(50, 100)])  # clips of 0-2 s and 2-4 s
    times = clip_times(idx, fps)
    np.testing.assert_allclose(times, [[0.0, 2.0], [2.0, 4.0]])
    audio = np.arange(5 * SR, dtype=np.float32)  # sample value = its index
    windows, valid = audio_windows(audio, SR, times, 2.0)
    assert windows.shape == (2, 32000) and windows.dtype == np.float32
    np.testing.assert_array_equal(windows[0], np.arange(0, 32000))  # centred at 1 s
    np.testing.assert_array_equal(windows[1], np.arange(32000, 64000))  # centred at 3 s
    assert valid.tolist() == [True, True]


def test_edge_windows_are_zero_padded():
    audio = np.arange(1, 3 * SR + 1, dtype=np.float32)  # 3 s, no zero sample
    times = np.array([[0.0, 0.5], [2.5, 3.0], [3.6, 4.0], [10.0, 11.0]])
    windows, valid = audio_windows(audio, SR, times, 1.0)
    # centre 0.25 s = sample 4000: window starts at -4000
    np.testing.assert_array_equal(windows[0, :4000], 0)
    np.testing.assert_array_equal(windows[0, 4000:], audio[:12000])
    # centre 2.75 s = sample 44000: window [36000, 52000), the track ends at 48000
    np.testing.assert_array_equal(windows[1, :12000], audio[36000:48000])
    np.testing.assert_array_equal(windows[1, 12000:], 0)
    # centre 3.8 s: window [52800, 68800) holds no sample of the track
    np.testing.assert_array_equal(windows[2:], 0)
    assert valid.tolist() == [True, True, False, False]


def test_no_audio_gives_zeros_and_invalid():
    windows, valid = audio_windows(None, SR, np.array([[0.0, 1.0], [1.0, 2.0]]), 2.0)
    assert windows.shape == (2, 32000) and not windows.any()
    assert valid.dtype == bool and not valid.any()
    windows, valid = audio_windows(np.zeros(0, np.float32), SR, np.array([[0.0, 1.0]]), 2.0)
    assert not valid.any()


def test_vggish_patches():
    s = AudioSettings()
    assert s.window_samples == 32000 and s.frames_per_window == 198
    mel = torch.arange(2 * 198 * 64, dtype=torch.float32).reshape(2, 198, 64)
    patches = vggish_patches(mel)
    assert patches.shape == (2, 2, 96, 64)
    assert torch.equal(patches[1, 0], mel[1, :96]) and torch.equal(patches[1, 1], mel[1, 96:192])
    half = vggish_patches(mel[0], hop_frames=48)
    assert half.shape == (3, 96, 64) and torch.equal(half[1], mel[0, 48:144])
    with pytest.raises(ValueError, match="lengthen"):
        vggish_patches(mel[:, :95])


def test_settings_round_trip_and_validation():
    s = AudioSettings(window_s=1.0, n_mels=40, power=2.0)
    assert AudioSettings.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unknown keys"):
        AudioSettings.from_dict({"n_fft": 400, "bins": 3})
    with pytest.raises(ValueError, match="f_max"):
        AudioSettings(f_max=9000.0)
    with pytest.raises(ValueError, match="n_fft"):
        AudioSettings(n_fft=256)
    with pytest.raises(ValueError, match="lengthen"):
        AudioSettings(window_s=0.01)


def _clips(n_frames, fps, num_clips=2):
    idx, _ = clip_frame_indices(n_frames, ClipSampling(num_clips=num_clips, frames_per_clip=4))
    return idx, clip_times(idx, fps)


def test_end_to_end_tone_video(tmp_path):
    fps, seconds = 25, 3
    frames = np.full((fps * seconds, 16, 16, 3), 128, dtype=np.uint8)
    path = write_video(
        tmp_path / "tone.mp4", frames, fps, audio=tone(440.0, seconds), sample_rate=SR
    )
    s = AudioSettings()
    idx, times = _clips(len(frames), fps)
    video = decode_video(path, union_frame_indices(idx), audio_rate=s.sample_rate)
    assert video.has_audio and video.audio_rate == SR
    windows, valid = audio_windows(video.audio, s.sample_rate, times, s.window_s)
    assert valid.all() and windows.shape == (2, 32000)
    mel = log_mel(windows, s)  # (2, 198, 64)
    peak = mel.mean(dim=1).argmax(dim=-1)  # (2,) loudest band of each window
    assert peak.tolist() == [nearest_band(440.0, s)] * 2
    assert vggish_patches(mel).shape == (2, 2, 96, 64)


def test_end_to_end_video_without_audio(tmp_path):
    frames = np.full((20, 16, 16, 3), 64, dtype=np.uint8)
    path = write_video(tmp_path / "silent.mp4", frames, 10)
    idx, times = _clips(len(frames), 10)
    video = decode_video(path, union_frame_indices(idx), audio_rate=SR)
    assert not video.has_audio and video.audio is None
    windows, valid = audio_windows(video.audio, SR, times, 2.0)
    assert windows.shape == (2, 32000) and not valid.any()
    assert torch.isfinite(log_mel(windows, AudioSettings())).all()  # masked rows stay finite
