"""Decoders: PyAV (the default) against torchcodec on the same files and the same frame requests.

``python -m benchmarks.run --only decode`` times ``decode_video(..., decoder=D)`` for every
decoder on the frame patterns ``extract.run`` asks for (:data:`PATTERNS`), on one thread (one
decode worker's share: ``threads=1``, ``torch.set_num_threads(1)``), the decoders interleaved
per repeat, best of ``REPEATS``:

* ``decode_<decoder>_<pattern>_frames_per_s``: needed frames decoded per second (the files
  opened, the frames decoded, RGB at the short side), and ``decode_torchcodec_vs_pyav_<pattern>``
  their ratio (> 1: torchcodec is faster).
* ``decode_<decoder>_audio_tracks_per_s``: whole audio tracks, mono 16 kHz (what an audio set
  asks for with no frames).
* ``decode_resized_mean_abs_diff`` / ``decode_resized_p99_abs_diff`` /
  ``decode_native_max_abs_diff``: how far torchcodec's frames are from PyAV's on the
  ``tsn8`` request (grey levels): resized at short side 128, and at the coded size.

Patterns on ``--size`` demo videos (default 40; 112 px, 3 s, 25 fps; one key frame each, as
libx264 puts one every 250 frames), and on :data:`LONG_VIDEOS` long demo videos of
:data:`LONG_SECONDS` s (key frames every 10 s), where seeking can skip decoding:

* ``tsn8``: 8 TSN segments x 1 frame at short side 128 (frame backbones: ResNet TSN).
* ``uniform8x16``: 8 uniform clips x 16 frames at short side 128 (clip backbones: R(2+1)D).
* ``long_tsn8``: ``tsn8`` on the long videos.

Where torchcodec cannot be imported it prints one line and times PyAV alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from benchmarks.registry import register_benchmark
from extract.demo import DemoConfig, make_demo
from extract.errors import ExtractError
from extract.media.decode import decode_video, probe_video
from extract.media.sampling import ClipSampling, clip_frame_indices
from extract.media.torchcodec_decode import require_torchcodec

VIDEOS, LONG_VIDEOS, LONG_SECONDS, REPEATS, SHORT_SIDE = 40, 4, 30.0, 3, 128
#: pattern -> (the clips extract.run would sample, on the long videos or not)
PATTERNS = {
    "tsn8": (ClipSampling("tsn", 8, 1, 1), False),
    "uniform8x16": (ClipSampling("uniform", 8, 16, 1), False),
    "long_tsn8": (ClipSampling("tsn", 8, 1, 1), True),
}


def _requests(paths: list[str], sampling: ClipSampling) -> list[tuple[str, np.ndarray]]:
    """``(path, sorted unique frame numbers)`` per video, as the decode workers ask for them."""
    out = []
    for p in paths:
        idx, _ = clip_frame_indices(probe_video(p).n_frames, sampling)  # (N, T)
        out.append((p, np.unique(idx)))
    return out


def _rate(requests: list[tuple[str, np.ndarray]], decoder: str, audio: bool = False) -> float:
    """Frames (or audio tracks) per second over the requests, one pass."""
    t = time.perf_counter()
    for path, idx in requests:
        if audio:
            decode_video(path, [], audio_rate=16000, decoder=decoder)
        else:
            decode_video(path, idx, SHORT_SIDE, decoder=decoder)
    done = len(requests) if audio else sum(len(i) for _, i in requests)
    return done / (time.perf_counter() - t)


def _differences(requests: list[tuple[str, np.ndarray]]) -> dict[str, float]:
    resized, native = [], 0
    for path, idx in requests:
        a, b = (decode_video(path, idx, SHORT_SIDE, decoder=d).frames for d in ("pyav", "torchcodec"))
        resized.append(np.abs(a.astype(np.int16) - b).ravel())
        a, b = (decode_video(path, idx, decoder=d).frames for d in ("pyav", "torchcodec"))
        native = max(native, int(np.abs(a.astype(np.int16) - b).max()))
    diff = np.concatenate(resized)
    return {"decode_resized_mean_abs_diff": float(diff.mean()),
            "decode_resized_p99_abs_diff": float(np.percentile(diff, 99)), "decode_native_max_abs_diff": native}


@register_benchmark("decode", "decoders: PyAV vs torchcodec frames/s on extract.run's frame patterns (one thread)")
def run_decode(args: argparse.Namespace) -> dict[str, float]:
    n = args.size or VIDEOS
    short = make_demo(args.workdir / f"decode_demo_{n}", DemoConfig(videos=n), progress=False)
    long = make_demo(args.workdir / f"decode_demo_long_{LONG_VIDEOS}",
                     DemoConfig(videos=LONG_VIDEOS, seconds=LONG_SECONDS), progress=False)
    paths = {False: [str(p) for p in short.video_list().videos["path"]],
             True: [str(p) for p in long.video_list().videos["path"]]}
    decoders = ["pyav", "torchcodec"]
    try:
        version = require_torchcodec()
    except ExtractError as err:
        print(f"   torchcodec is not available, PyAV timed alone: {err}")
        decoders = ["pyav"]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    metrics: dict[str, float] = {}
    try:
        requests = {name: _requests(paths[is_long], s) for name, (s, is_long) in PATTERNS.items()}
        work = [*((name, req, False) for name, req in requests.items()), ("audio", [(p, None) for p in paths[False]],
                                                                         True)]
        for name, req, audio in work:
            unit = "tracks" if audio else "frames"
            for d in decoders:
                _rate(req[:2], d, audio)  # warm-up: libraries loaded, caches filled
            best = dict.fromkeys(decoders, 0.0)
            for _ in range(REPEATS):
                for d in decoders:  # interleaved, so a change in the machine's load hits both
                    best[d] = max(best[d], _rate(req, d, audio))
            for d in decoders:
                metrics[f"decode_{d}_{name}_{unit}_per_s"] = best[d]
            if len(decoders) == 2:
                metrics[f"decode_torchcodec_vs_pyav_{name}"] = best["torchcodec"] / best["pyav"]
        if len(decoders) == 2:
            metrics |= _differences(requests["tsn8"])
    finally:
        torch.set_num_threads(old)
    print(f"   {n} demo videos (112 px, 3 s) and {LONG_VIDEOS} of {LONG_SECONDS:g} s, short side {SHORT_SIDE}, one "
          f"thread, best of {REPEATS}" + (f"; torchcodec {version}" if len(decoders) == 2 else ""))
    for name in [*PATTERNS, "audio"]:
        unit = "tracks" if name == "audio" else "frames"
        line = "  ".join(f"{d} {metrics[f'decode_{d}_{name}_{unit}_per_s']:8.1f}" for d in decoders)
        ratio = metrics.get(f"decode_torchcodec_vs_pyav_{name}")
        print(f"     {name:12s} {unit}/s: {line}" + (f"   torchcodec / pyav {ratio:.2f}x" if ratio else ""))
    if len(decoders) == 2:
        print(f"     torchcodec vs PyAV frames (tsn8): resized mean |diff| "
              f"{metrics['decode_resized_mean_abs_diff']:.2f}, p99 {metrics['decode_resized_p99_abs_diff']:.0f}; "
              "coded size max |diff| "
              f"{metrics['decode_native_max_abs_diff']}")
    return metrics
