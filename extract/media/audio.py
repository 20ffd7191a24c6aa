"""Audio windows aligned to video clips, log-mel spectrograms and VGGish patches.

The audio track is decoded once, with the video, by ``decode_video(..., audio_rate=16000)``
(PyAV resampler to mono float32, whatever the codec). Then, for the clips of a video::

    times = clip_times(idx, info.fps)                                      # (N, 2) s
    wave, valid = audio_windows(video.audio, s.sample_rate, times, s.window_s)  # (N, W), (N,)
    mel = log_mel(wave, s)                                                 # (N, F, 64)
    patches = vggish_patches(mel)                                          # (N, P, 96, 64)

* **Windows** are ``window_s`` long (``W = round(window_s * sample_rate)`` samples),
  centred on each clip's centre time, and zero-padded where they pass either end of the
  track. ``valid`` is False for a window without a single audio sample: every window of
  a video without audio (``audio=None``), and windows past the end of a short track. The
  rows are not errors; the store's valid mask takes ``valid`` and the run counts them.
* **Log-mel** follows VGGish (``vggish_input.waveform_to_examples``): frames of 25 ms
  (``win_length = 400``) every 10 ms (``hop = 160``), no centre padding, periodic Hann
  window, each frame zero-padded to ``n_fft = 512`` (the next power of two) for the FFT,
  magnitude spectrum (``power = 1``; 2 gives the power spectrum), 64 triangular mel bands
  on the HTK mel scale (``1127 ln(1 + f / 700)``) between 125 and 7500 Hz, then
  ``log(mel + 0.01)``. A window of ``W`` samples gives ``F = 1 + (W - 400) // 160`` frames
  (198 for 2 s). Computed in torch on the waveform's device, batched over windows.
* **Mel filterbank** (:func:`mel_filterbank`): VGGish's ``spectrogram_to_mel_matrix``:
  ``n_mels + 2`` edges equally spaced in mel; filter ``m`` rises linearly *in mel* from
  edge ``m`` to 1 at edge ``m + 1`` and falls to 0 at edge ``m + 2``; the DC bin has no
  weight; no area normalisation (peaks are 1). Cached per parameter set.
* **VGGish patches** are 96 frames (0.96 s) x 64 bands, non-overlapping by default.
* **Raw waveform** (EnvNet-style nets) is the windows themselves.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass(frozen=True)
class AudioSettings:
    """Audio windows and log-mel parameters (VGGish values; recorded in the attrs).

    Attributes:
        sample_rate: Hz; ask ``decode_video`` for ``audio_rate=sample_rate``.
        window_s: seconds of audio per clip, centred on the clip.
        n_mels: mel bands.
        win_length: STFT frame length in samples (400 = 25 ms at 16 kHz).
        n_fft: FFT size; frames are zero-padded to it (VGGish: 512, the next power of 2).
        hop: STFT hop in samples (160 = 10 ms at 16 kHz).
        f_min: lowest band edge in Hz.
        f_max: highest band edge in Hz (<= sample_rate / 2).
        log_offset: added before the log (VGGish: 0.01).
        power: exponent of the spectrum: 1 magnitude (VGGish), 2 power.
    """

    sample_rate: int = 16000
    window_s: float = 2.0
    n_mels: int = 64
    win_length: int = 400
    n_fft: int = 512
    hop: int = 160
    f_min: float = 125.0
    f_max: float = 7500.0
    log_offset: float = 0.01
    power: float = 1.0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_mels", "win_length", "n_fft", "hop"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(
                    f"AudioSettings.{name} must be an integer >= 1, got {getattr(self, name)!r}"
                )
        if self.win_length > self.n_fft:
            raise ValueError(
                f"AudioSettings: win_length {self.win_length} > n_fft {self.n_fft}; "
                "raise n_fft to the next power of two"
            )
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(
                f"AudioSettings: need 0 <= f_min < f_max <= sample_rate / 2, got f_min="
                f"{self.f_min}, f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        if not self.window_samples >= self.win_length:
            raise ValueError(
                f"AudioSettings.window_s={self.window_s!r} gives {self.window_samples} samples, "
                f"fewer than one STFT frame ({self.win_length}); lengthen the window"
            )
        if not (self.log_offset > 0 and self.power > 0):
            raise ValueError(
                f"AudioSettings: log_offset and power must be > 0, got "
                f"{self.log_offset!r}, {self.power!r}"
            )

    @property
    def window_samples(self) -> int:
        """W, samples per window."""
        return round(self.window_s * self.sample_rate)

    @property
    def frames_per_window(self) -> int:
        """F, log-mel frames of one window."""
        return 1 + (self.window_samples - self.win_length) // self.hop

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for the feature set's attrs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioSettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(
                f"AudioSettings.from_dict: unknown keys {unknown} "
                "(was this written by a newer version?)"
            )
        return cls(**d)


def audio_windows(
    audio: np.ndarray | None, sample_rate: int, clip_times: np.ndarray, window_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """One fixed-length window of audio per clip, centred on the clip.

    Window ``i`` covers samples ``[c_i - W // 2, c_i - W // 2 + W)``,
    ``c_i = round(sample_rate * (start_i + end_i) / 2)``; samples outside the track are 0.

    Args:
        audio: (S,) mono samples at ``sample_rate``, or None for a video without audio.
        sample_rate: Hz.
        clip_times: (N, 2) ``[start, end]`` seconds from ``extract.media.sampling.clip_times``.
        window_s: window length in seconds.

    Returns:
        ``(windows, valid)``: (N, W) float32 and (N,) bool, True where the window holds at
        least one sample of the track.
    """
    times = np.asarray(clip_times, dtype=np.float64)
    if times.ndim != 2 or times.shape[1] != 2:
        raise ValueError(f"clip_times must be (N, 2) [start, end] seconds, got {times.shape}")
    if not _is_int(sample_rate) or sample_rate < 1:
        raise ValueError(f"sample_rate must be an integer >= 1, got {sample_rate!r}")
    width = round(window_s * sample_rate)
    if width < 1:
        raise ValueError(f"window_s={window_s!r} gives no samples at {sample_rate} Hz")
    n = len(times)
    windows = np.zeros((n, width), dtype=np.float32)  # (N, W)
    if audio is None:
        return windows, np.zeros(n, dtype=bool)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (S,), got shape {audio.shape}; average channels")
    centre = np.rint(times.mean(axis=1) * sample_rate).astype(np.int64)  # (N, 2) -> (N,)
    first = centre - width // 2  # (N,) first sample of each window
    lo = np.clip(first, 0, audio.size)  # (N,) overlap with the track: [lo, hi)
    hi = np.clip(first + width, 0, audio.size)
    for i in range(n):
        windows[i, lo[i] - first[i] : hi[i] - first[i]] = audio[lo[i] : hi[i]]
    return windows, hi > lo


@functools.lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float
) -> np.ndarray:
    """HTK-mel triangular filterbank, VGGish's ``spectrogram_to_mel_matrix`` (cached).

    Returns:
        (n_fft // 2 + 1, n_mels) float64, read-only: ``mel = spectrum @ bank``.
    """
    bins = n_fft // 2 + 1
    spec_mel = hz_to_mel(np.linspace(0.0, sample_rate / 2, bins))  # (bins,) FFT bins in mel
    edges = np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)  # (M + 2,)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    rise = (spec_mel[:, None] - lower) / (centre - lower)  # (bins, 1) - (M,) -> (bins, M)
    fall = (upper - spec_mel[:, None]) / (upper - centre)  # (bins, M)
    bank = np.maximum(0.0, np.minimum(rise, fall))
    bank[0, :] = 0.0  # no weight on DC (VGGish)
    bank.setflags(write=False)
    return bank


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * np.expm1(np.asarray(mel, dtype=np.float64) / 1127.0)


def mel_center_frequencies(settings: AudioSettings) -> np.ndarray:
    """(n_mels,) centre frequency in Hz of every mel band (where its weight is 1)."""
    edges = np.linspace(hz_to_mel(settings.f_min), hz_to_mel(settings.f_max), settings.n_mels + 2)
    return mel_to_hz(edges[1:-1])


def log_mel(waveform: np.ndarray | torch.Tensor, settings: AudioSettings) -> torch.Tensor:
    """Log-mel spectrogram, batched over any leading axes.

    Args:
        waveform: (..., S) samples at ``settings.sample_rate``, S >= ``win_length``.
        settings: STFT and mel parameters.

    Returns:
        (..., F, n_mels) float32 tensor on the waveform's device,
        ``F = 1 + (S - win_length) // hop``.
    """
    x = torch.as_tensor(waveform).to(torch.float32)
    if x.ndim < 1 or x.shape[-1] < settings.win_length:
        raise ValueError(
            f"log_mel needs (..., S) samples with S >= win_length={settings.win_length}, "
            f"got shape {tuple(x.shape)}"
        )
    window = torch.hann_window(settings.win_length, periodic=True, device=x.device)  # (win,)
    frames = x.unfold(-1, settings.win_length, settings.hop)  # (..., S) -> (..., F, win)
    spectrum = torch.fft.rfft(frames * window, n=settings.n_fft).abs()  # -> (..., F, n_fft/2+1)
    if settings.power != 1.0:
        spectrum = spectrum.pow(settings.power)
    bank = mel_filterbank(
        settings.sample_rate, settings.n_fft, settings.n_mels, settings.f_min, settings.f_max
    )
    bank_t = torch.from_numpy(bank.astype(np.float32)).to(x.device)  # (n_fft/2+1, M)
    return torch.log(spectrum @ bank_t + settings.log_offset)  # -> (..., F, M)


def vggish_patches(
    log_mel: np.ndarray | torch.Tensor, patch_frames: int = 96, hop_frames: int = 96
) -> torch.Tensor:
    """Cut log-mel frames into VGGish examples (96 frames = 0.96 s at a 10 ms hop).

    Args:
        log_mel: (..., F, n_mels) from :func:`log_mel`, F >= ``patch_frames``.
        patch_frames: frames per patch.
        hop_frames: frames between patch starts (= ``patch_frames``: no overlap).

    Returns:
        (..., P, patch_frames, n_mels), ``P = 1 + (F - patch_frames) // hop_frames``; the
        frames after the last whole patch are dropped.
    """
    x = torch.as_tensor(log_mel)
    if patch_frames < 1 or hop_frames < 1:
        raise ValueError(
            f"patch_frames and hop_frames must be >= 1, got {patch_frames}, {hop_frames}"
        )
    if x.ndim < 2 or x.shape[-2] < patch_frames:
        raise ValueError(
            f"vggish_patches needs (..., F, n_mels) with F >= {patch_frames} frames, got shape "
            f"{tuple(x.shape)}; lengthen the audio window (VGGish settings: 0.975 s per patch)"
        )
    patches = x.unfold(-2, patch_frames, hop_frames)  # (..., F, M) -> (..., P, M, patch)
    return patches.transpose(-1, -2)  # -> (..., P, patch, M)
