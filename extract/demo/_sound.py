"""Synthesise the audio track of one demo video: background plus the sound-class events.

Background (every video, labelled or not): Gaussian noise at ``0.01 + 0.06 * difficulty``
RMS and, growing with ``difficulty``, a low mains-like hum (50-120 Hz, below every class's
frequencies). Events, one per sound label, each at a random time inside the clip:

* ``tone``: a steady sine, 350-1400 Hz, 0.8-1.6 s;
* ``chirp_up``: an exponential sweep up by a factor 2.5-4 from 250-600 Hz, 0.7-1.4 s;
* ``chirp_down``: the same sweep played backwards (an exact time reversal of chirp_up);
* ``knocks``: 3-6 damped 180-450 Hz knocks (25-50 ms decay) at a steady 0.2-0.35 s beat;
* ``noise_bursts``: 2-4 bursts of white noise, 80-200 ms each, one per time slot.

Every event has short raised-cosine fades. The picture carries no trace of any of them.
"""

from __future__ import annotations

import numpy as np

from extract.demo._classes import SOUND_CLASSES

_FADE_S = 0.02


def _fade(n: int, sample_rate: int) -> np.ndarray:
    """Symmetric raised-cosine fade-in/out envelope of ``n`` samples."""
    env = np.ones(n)
    k = min(int(_FADE_S * sample_rate), n // 2)
    if k > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * np.arange(k) / k)
        env[:k], env[n - k:] = ramp, ramp[::-1]
    return env


def _tone(rng: np.random.Generator, sr: int, max_s: float) -> np.ndarray:
    n = int(min(rng.uniform(0.8, 1.6), max_s) * sr)
    freq = rng.uniform(350, 1400)
    return np.sin(2 * np.pi * freq * np.arange(n) / sr + rng.uniform(0, 2 * np.pi)) * _fade(n, sr)


def _chirp_up(rng: np.random.Generator, sr: int, max_s: float) -> np.ndarray:
    dur = min(rng.uniform(0.7, 1.4), max_s)
    n = int(dur * sr)
    f0, ratio = rng.uniform(250, 600), rng.uniform(2.5, 4.0)
    t = np.arange(n) / sr
    phase = 2 * np.pi * f0 * dur / np.log(ratio) * (ratio ** (t / dur) - 1)
    return np.sin(phase) * _fade(n, sr)


def _knocks(rng: np.random.Generator, sr: int, max_s: float) -> np.ndarray:
    beat, decay, freq = rng.uniform(0.2, 0.35), rng.uniform(0.025, 0.05), rng.uniform(180, 450)
    count = int(rng.integers(3, 7))
    count = max(1, min(count, int((max_s - 5 * decay) / beat) + 1))
    knock_n = int(5 * decay * sr)
    tk = np.arange(knock_n) / sr
    knock = np.exp(-tk / decay) * np.sin(2 * np.pi * freq * tk)
    click = int(0.003 * sr)
    knock[:click] += rng.standard_normal(click) * np.linspace(1, 0, click)
    beat_n = int(beat * sr)
    out = np.zeros(beat_n * (count - 1) + knock_n)
    for i in range(count):
        out[i * beat_n:i * beat_n + knock_n] += knock
    return out / max(np.max(np.abs(out)), 1e-9)


def _noise_bursts(rng: np.random.Generator, sr: int, max_s: float) -> np.ndarray:
    count = int(rng.integers(2, 5))
    n = int(max_s * sr)
    slot = n // count
    out = np.zeros(n)
    for i in range(count):
        length = min(int(rng.uniform(0.08, 0.2) * sr), slot)
        start = i * slot + int(rng.integers(0, slot - length + 1))
        out[start:start + length] = rng.standard_normal(length) * 0.5 * _fade(length, sr)
    return out


def synthesize_audio(
    labels: set[str] | frozenset[str],
    rng: np.random.Generator,
    *,
    seconds: float,
    sample_rate: int,
    difficulty: float,
) -> tuple[np.ndarray, list[dict]]:
    """Synthesise a mono track of ``seconds`` at ``sample_rate``.

    Args:
        labels: the video's class names (only ``SOUND_CLASSES`` names make sound).
        rng: the video's generator for the sound.
        seconds: duration of the track.
        sample_rate: samples per second.
        difficulty: 0 (quiet background) to 1 (loud background and hum).

    Returns:
        ``(audio, events)``: audio ``(round(seconds * sample_rate),)`` float32 in [-1, 1];
        events as dicts ``{"label", "start", "end"}`` in seconds, in label order.
    """
    n = round(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    audio = rng.standard_normal(n) * (0.01 + 0.06 * difficulty)
    hum_freq, hum_phase = rng.uniform(50, 120), rng.uniform(0, 2 * np.pi)
    audio += 0.08 * difficulty * np.sin(2 * np.pi * hum_freq * t + hum_phase)
    events = []
    for label in SOUND_CLASSES:  # fixed order: the draws do not depend on set order
        if label not in labels:
            continue
        max_s = 0.9 * seconds
        if label == "tone":
            wave = _tone(rng, sample_rate, max_s)
        elif label in ("chirp_up", "chirp_down"):
            wave = _chirp_up(rng, sample_rate, max_s)
            wave = wave[::-1] if label == "chirp_down" else wave
        elif label == "knocks":
            wave = _knocks(rng, sample_rate, max_s)
        else:
            wave = _noise_bursts(rng, sample_rate, max_s)
        start = int(rng.integers(0, n - len(wave) + 1))
        audio[start:start + len(wave)] += rng.uniform(0.25, 0.45) * wave
        events.append({"label": label, "start": start / sample_rate,
                       "end": (start + len(wave)) / sample_rate})
    return np.clip(audio, -1.0, 1.0).astype(np.float32), events
