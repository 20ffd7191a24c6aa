"""Pretrained frame encoders by name: clips/s and peak memory of a timm ConvNeXt and a CLIP ViT.

Part of ``python -m benchmarks.run --only extract`` (:func:`frame_encoder_rates`), so users can
choose between the families on their machine; these lines alone:
``python -c "from benchmarks.encoders_bench import frame_encoder_rates as f; f('cpu')"``.
Each model runs in a fresh process (``spawn``), so its peak resident memory (``ru_maxrss``:
the interpreter, torch, the model and its activations) is its own:

* ``timm/convnext_tiny`` (D = 768) and ``clip/ViT-B-32`` (D = 512), both at their own input
  size (224 px), one frame per clip, random weights (``@random``: the speed does not depend
  on the values, and no download is needed);
* the model stage as ``extract.run`` runs it (``RGBProducer.embed``: uint8 frames to the
  device, normalise, channels-last, ``forward_features``), batches of ``BATCH`` clips, the
  run's default model threads; ``<key>_clips_per_s`` is the best of ``REPEATS`` tries,
  ``<key>_peak_rss_gb`` the child's peak RSS.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time

import numpy as np
import torch

from extract.dump import pipeline
from extract.dump.settings import ExtractSettings, default_parallelism

#: metric key -> ``--backbone`` name and weights
ENCODERS = {
    "timm_convnext_tiny": ("timm/convnext_tiny", "random"),
    "clip_vit_b32": ("clip/ViT-B-32", "random"),
}
BATCH = 8
BATCHES = 3
REPEATS = 2


def _child(name: str, weights: str, device: str, threads: int) -> tuple[float, float, int, int]:
    """In a fresh process: (clips/s, peak RSS in GB, D, input size) of one encoder."""
    torch.set_num_threads(threads)
    settings = ExtractSettings(backbone=name, weights=weights, clips=BATCH, workers=0)
    producer = pipeline.build_producers(settings, device)[0]
    info = producer.model.info
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (BATCH, 1, info.input_size, info.input_size, 3), dtype=np.uint8)
    producer.embed(clips)  # warm-up (allocations, oneDNN kernels)
    best = 0.0
    for _ in range(REPEATS):
        t = time.perf_counter()
        for _ in range(BATCHES):
            producer.embed(clips)
        best = max(best, BATCH * BATCHES / (time.perf_counter() - t))
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return best, peak_gb, info.feature_dim, info.input_size


def frame_encoder_rates(device: str) -> dict[str, float]:
    """``<key>_clips_per_s`` and ``<key>_peak_rss_gb`` for every entry of :data:`ENCODERS`."""
    threads = default_parallelism(device)[1]
    metrics: dict[str, float] = {}
    ctx = mp.get_context("spawn")
    for key, (name, weights) in ENCODERS.items():
        with ctx.Pool(1) as pool:
            rate, peak, dim, size = pool.apply(_child, (name, weights, device, threads))
        metrics[f"{key}_clips_per_s"], metrics[f"{key}_peak_rss_gb"] = rate, peak
        print(f"   {name}@{weights} (D={dim}, {size} px, 1 frame per clip, batch {BATCH}, {threads} threads): "
              f"{rate:.1f} clips/s, peak RSS {peak:.2f} GB")
    return metrics
