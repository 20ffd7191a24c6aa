"""The torchvision video families side by side: clips/s and peak memory on the CPU, for choosing one.

Part of ``python -m benchmarks.run --only extract`` (:func:`video_family_rates`); these lines
alone: ``python -c "from benchmarks.backbone_families_bench import video_family_rates as f; f()"``.
Each backbone runs in a fresh process (``spawn``), so its peak resident memory (``ru_maxrss``:
the interpreter, torch, the model and its activations) is its own:

* S3D, MViT v2-S and Swin3D-T at torchvision's evaluation crop (224 px) and clip length
  (16 frames for MViT, 32 for Swin3D; S3D's weights were evaluated on 128-frame clips, far too
  slow for a CPU line, so 32 here), random weights (``@random``: the speed does not depend on
  the values, and nothing is downloaded);
* the model stage as ``extract.run`` runs it (``RGBProducer.embed``: uint8 frames in,
  normalise, ``forward_features``), one clip per batch after one warm-up clip, on the run's
  default model threads: ``<key>_clips_per_s`` and ``<key>_peak_rss_gb``.

Another family is one entry of :data:`FAMILIES`.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

import numpy as np

#: metric key -> (registered backbone, frames per clip or None for its clip length)
FAMILIES: dict[str, tuple[str, int | None]] = {
    "s3d": ("s3d", 32),
    "mvit_v2_s": ("mvit_v2_s", None),
    "swin3d_t": ("swin3d_t", None),
}
CLIPS = 2  # timed clips per backbone, one per batch, after one warm-up clip


def _child(name: str, frames: int | None, threads: int) -> tuple[float, float, int, int, int]:
    """In a fresh process: (clips/s, peak RSS in GB, D, frames, crop) of one backbone's model stage."""
    import torch

    from extract.dump import pipeline
    from extract.dump.settings import ExtractSettings

    torch.set_num_threads(threads)
    settings = ExtractSettings(backbone=name, weights="random", frames=frames, clips=1, workers=0)
    producer = pipeline.build_producers(settings, "cpu")[0]
    info, t = producer.model.info, frames or producer.model.info.clip_len
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (1, t, info.input_size, info.input_size, 3), dtype=np.uint8)  # (B, T, H, W, C)
    producer.embed(clip)  # warm-up (allocations, oneDNN kernels)
    start = time.perf_counter()
    for _ in range(CLIPS):
        producer.embed(clip)
    rate = CLIPS / (time.perf_counter() - start)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return rate, peak_gb, info.feature_dim, t, info.input_size


def video_family_rates() -> dict[str, float]:
    """``<key>_clips_per_s`` and ``<key>_peak_rss_gb`` for every entry of :data:`FAMILIES` (CPU)."""
    from extract.dump.settings import default_parallelism

    threads = default_parallelism("cpu")[1]
    metrics: dict[str, float] = {}
    ctx = mp.get_context("spawn")
    for key, (name, frames) in FAMILIES.items():
        with ctx.Pool(1) as pool:
            rate, peak, dim, t, size = pool.apply(_child, (name, frames, threads))
        metrics[f"{key}_clips_per_s"], metrics[f"{key}_peak_rss_gb"] = rate, peak
        print(f"   {name}@random (D={dim}, {t}x{size}x{size} clips, batch 1, {threads} threads, CPU): "
              f"{rate:.2f} clips/s, peak RSS {peak:.2f} GB")
    return metrics
