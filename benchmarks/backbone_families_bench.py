"""Backbone families side by side: model clips/s and peak memory on random clips, for choosing one.

One line per family (part of ``python -m benchmarks.run --only extract``): the backbone's
``forward_features`` on random ``(1, 3, T, S, S)`` clips of its own clip length and crop
(torchvision's evaluation shape, from its weights' metadata), random init (speed does not
depend on the weights, and nothing is downloaded). Each family runs in a fresh process so
its peak resident memory (``ru_maxrss``: torch, the model and its activations) is its own:

* ``family_<name>_clips_per_s``: clips per second after one warm-up clip;
* ``family_<name>_peak_rss_mib``: the process's peak resident set.

Other families add one entry to :data:`FAMILIES` (registered backbone, frames or None for
its clip length, and a label). The frame encoders by name (``timm/convnext_tiny``,
``clip/ViT-B-32``) take one frame per clip, so their clips/s are frames/s; ``/`` becomes ``_``
in their metric keys (``family_timm_convnext_tiny_clips_per_s``).
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor

#: (backbone, frames (None = its clip length), label) per line.
FAMILIES: list[tuple[str, int | None, str]] = [
    ("r2plus1d_18", None, "R(2+1)D-18 (reference)"),
    ("s3d", 32, "S3D"),
    ("mvit_v2_s", None, "MViT v2-S"),
    ("swin3d_t", None, "Swin3D-T"),
    ("timm/convnext_tiny", None, "timm ConvNeXt-T (frame)"),
    ("clip/ViT-B-32", None, "CLIP ViT-B/32 (frame)"),
]
CLIPS = 2  # timed clips per family, after one warm-up clip


def _run_family(name: str, frames: int | None, threads: int, clips: int) -> tuple[float, float, int, int]:
    """In a fresh process: ``(clips/s, peak RSS MiB, frames, crop)`` of ``name``'s forward_features."""
    import torch

    from extract.backbones import RANDOM, get_backbone

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = get_backbone(name, weights=RANDOM).eval()
    t, s = frames or model.info.clip_len, model.info.input_size
    x = torch.randn(1, model.info.in_channels, t, s, s)  # (1, C, T, S, S)
    with torch.inference_mode():
        model.forward_features(x)  # warm-up
        start = time.perf_counter()
        for _ in range(clips):
            model.forward_features(x)
        rate = clips / (time.perf_counter() - start)
    scale = 1024 if sys.platform != "darwin" else 1024 * 1024  # KiB on Linux, bytes on macOS
    return rate, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale, t, s


def bench_families(threads: int, families: list[tuple[str, int | None, str]] = FAMILIES,
                   clips: int = CLIPS) -> dict[str, float]:
    """Print one line per family and return its metrics (see the module docstring)."""
    metrics: dict[str, float] = {}
    print(f"   backbone families, CPU, {threads} thread(s), batch 1, random init, {clips} clips each:")
    ctx = mp.get_context("spawn")
    for name, frames, label in families:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            rate, rss, t, s = pool.submit(_run_family, name, frames, threads, clips).result()
        print(f"     {label:24s} {name:18s} {t:3d}x{s}px  {rate:6.2f} clips/s  peak RSS {rss:7.0f} MiB")
        key = name.replace("/", "_")  # timm/convnext_tiny -> timm_convnext_tiny
        metrics |= {f"family_{key}_clips_per_s": rate, f"family_{key}_peak_rss_mib": rss}
    return metrics
