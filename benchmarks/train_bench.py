"""Backbone training quality: features of a trained backbone vs the same backbone at random init.

On a demo set (``--size`` videos, default 640: 448 train, 96 val; 64 px, 3 s, difficulty 0.2:
fewer confusable distractors and less noise than the default 0.5, so a tiny net learns
from a few hundred videos in minutes), a tiny temporal backbone (TSM, 4 frames at stride 6,
48 px crops: the demo's motion classes are time reversals, invisible to a frame model) is
trained with ``extract.training.fit`` (AdamW, cosine, mixup 0.4, random resize + crop + flip)
for a CPU-affordable number of epochs. Then ``extract.dump.pipeline`` (the library behind
``extract.run``) embeds every video twice into one store: with the trained ``backbone.pt``
and with the random init it started from (same seed). A linear probe (one-vs-rest logistic
regression on the mean of the valid clip features, standardised on train) is fitted on the
train split and scored on val: class mAP of each (``trained_map``, ``random_map``), overall
and per class family. The training loop's data wait (time blocked on the loader / step
time) is reported for the first epoch (``data_wait_fraction_epoch1``: every video is decoded,
the clip cache fills) and for the epochs after it (``data_wait_fraction_after_first_epoch``:
about 1 / ``decode_every`` of the videos are decoded per epoch, the rest come from the
cache), beside the same figures of a short run without the cache that decodes every example
every epoch (``uncached_*``, the path before the clip cache; 3 epochs). About 5 minutes on
2 cores (50 epochs of 448 videos, then 2 x 640 extractions).

Measured on the 2-core dev machine shared with other jobs (load average 13-17), 50 epochs,
``decode_every`` 16, with the cached examples made by a background thread while the model
computes: data wait after the first epoch 7.8%, 6.9% and 7.2% of step time in three runs (max
epoch 11.8-12.2%), against 12.6%, 13.2% and 12.9% for the same code reading them in the loop, run
back to back (target < 10%: met under that load); decoding every epoch 69-71%; trained 0.262 vs random
init 0.150 val class mAP (1.75x), the same with and without the thread (the batches are keyed).
See extract/README.md, *Quality check*.
"""

from __future__ import annotations

import argparse
import shutil
import time

import numpy as np

from benchmarks.registry import register_benchmark

EPOCHS = 50
UNCACHED_EPOCHS = 3
DIFFICULTY = 0.2
RECIPE = dict(backbone="tsm_tiny", weights="random", frames=4, stride=6, crop=48, batch_size=16, optimizer="adamw",
              lr=3e-3, weight_decay=0.01, warmup_epochs=1.0, mixup_alpha=0.4, dropout=0.2, eval_clips=2, seed=0,
              device="auto")


def _linear_probe_map(features: np.ndarray, valid: np.ndarray, labels: np.ndarray, train: np.ndarray,
                      val: np.ndarray) -> tuple[float, np.ndarray]:
    """Class mAP on ``val`` of a logistic regression per class fitted on ``train`` (mean-pooled)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    from heads.metrics import class_map

    w = valid.astype(np.float32)[:, :, None]  # (N, K) -> (N, K, 1)
    pooled = (features * w).sum(1) / np.maximum(w.sum(1), 1)  # (N, K, D) -> (N, D)
    mean, std = pooled[train].mean(0), pooled[train].std(0) + 1e-6
    x = (pooled - mean) / std
    probe = OneVsRestClassifier(LogisticRegression(C=0.5, max_iter=2000)).fit(x[train], labels[train])
    result = class_map(probe.decision_function(x[val]), labels[val])
    return result.value, result.per_class


@register_benchmark("train", "backbone training on the demo set: linear-probe val mAP, trained vs random-init features")
def bench_train(args: argparse.Namespace) -> dict[str, float]:
    import torch

    from extract.demo import DemoConfig, make_demo
    from extract.dump import pipeline
    from extract.dump.settings import ExtractSettings
    from extract.training import TrainData, TrainRecipe, fit
    from store import FeatureStore
    from store.threads import available_cores

    n = args.size or 640
    work = args.workdir / "train"
    shutil.rmtree(work / "run", ignore_errors=True)  # its clip cache too: the first epoch decodes everything
    shutil.rmtree(work / "run_uncached", ignore_errors=True)
    shutil.rmtree(work / "features.zarr", ignore_errors=True)
    demo = make_demo(work / f"demo_{n}_d{DIFFICULTY}", DemoConfig(videos=n, size=64, seed=0, difficulty=DIFFICULTY),
                     progress=False)
    tr, va = demo.video_list("train"), demo.video_list("val")
    data = TrainData(tr.videos, tr.label_matrix(), va.videos, va.label_matrix(), list(demo.classes))
    cores = available_cores()
    workers = max(1, min(4, cores - 1))  # decoding, not the tiny model, limits a CPU run
    torch.set_num_threads(max(1, cores - workers))
    recipe = TrainRecipe(epochs=EPOCHS, **RECIPE)
    print(f"   demo: {n} videos ({len(tr)} train, {len(va)} val), 64 px, 3 s, difficulty {DIFFICULTY}; "
          f"{recipe.backbone} "
          f"{recipe.frames}x{recipe.crop}px, {EPOCHS} epochs, {workers} decode worker(s), "
          f"{torch.get_num_threads()} torch threads")
    t = time.perf_counter()

    def report(epoch: int, model, entry: dict) -> None:
        if epoch % 5 == 0 or epoch == EPOCHS:
            print(f"   epoch {epoch:3d}: train loss {entry['train_loss']:.4f}, val class mAP "
                  f"{entry.get('class_map', float('nan')):.4f}, data wait {100 * entry['data_wait_fraction']:.0f}%, "
                  f"{time.perf_counter() - t:.0f} s", flush=True)

    result = fit(recipe, data, work / "run", workers=workers, on_epoch_end=report)
    train_s = time.perf_counter() - t
    waits = [e["data_wait_fraction"] for e in result.history]
    epoch_s = [e["train_seconds"] for e in result.history]
    # the path without the cache: every example decodes its own clip, every epoch (a short run)
    plain = fit(TrainRecipe(epochs=UNCACHED_EPOCHS, **{**RECIPE, "decode_every": 1}), data, work / "run_uncached",
                workers=workers, cache_dir=None)
    plain_waits = [e["data_wait_fraction"] for e in plain.history]
    plain_epoch_s = [e["train_seconds"] for e in plain.history]

    videos = pipeline.open_video_list(demo.videos_csv)
    fs, targets = pipeline.prepare_store(work / "features.zarr", videos, workers=workers)
    t = time.perf_counter()
    for name, weights in (("trained", result.backbone_path), ("random", None)):
        settings = ExtractSettings(backbone=recipe.backbone, weights=str(weights) if weights else "random",
                                   seed=recipe.seed, clips=4, frames=recipe.frames, stride=recipe.stride,
                                   crop=recipe.crop, workers=workers, threads=torch.get_num_threads(), set_name=name)
        producers = pipeline.build_producers(settings, "cpu")
        pipeline.run_extraction(fs, targets, producers, settings, set_names=[name])
    extract_s = time.perf_counter() - t

    fs = FeatureStore.open(work / "features.zarr", "r")
    labels = fs.labels()
    train_rows, val_rows = fs.split_rows("train"), fs.split_rows("val")
    families = np.array([demo.families[c] for c in fs.classes])
    metrics: dict[str, float] = {}
    for name in ("trained", "random"):
        feats, valid = fs.feature_set(name).read()
        value, per_class = _linear_probe_map(feats, valid, labels, train_rows, val_rows)
        metrics[f"{name}_map"] = value
        for family in ("appearance", "motion", "sound"):
            ap = per_class[(families == family) & ~np.isnan(per_class)]
            metrics[f"{name}_{family}_map"] = float(ap.mean()) if ap.size else float("nan")
    metrics["ratio"] = metrics["trained_map"] / metrics["random_map"]
    metrics["train_val_class_map_last_epoch"] = result.history[-1].get("class_map", float("nan"))
    metrics["data_wait_fraction"] = float(np.mean(waits))
    metrics["data_wait_fraction_epoch1"] = waits[0]
    metrics["data_wait_fraction_after_first_epoch"] = float(np.mean(waits[1:]))
    metrics["data_wait_fraction_after_first_epoch_max"] = float(np.max(waits[1:]))
    metrics["uncached_data_wait_fraction_epoch1"] = plain_waits[0]
    metrics["uncached_data_wait_fraction_after_first_epoch"] = float(np.mean(plain_waits[1:]))
    metrics["train_epoch_seconds_epoch1"] = epoch_s[0]
    metrics["train_epoch_seconds_after_first_epoch"] = float(np.mean(epoch_s[1:]))
    metrics["uncached_train_epoch_seconds_after_first_epoch"] = float(np.mean(plain_epoch_s[1:]))
    metrics["decode_every"] = recipe.decode_every
    metrics["train_seconds"] = train_s
    metrics["extract_seconds"] = extract_s
    metrics["epochs"] = EPOCHS
    for key, v in metrics.items():
        print(f"   {key:34s} {v:10.4f}")
    print(f"   linear probe on val: trained {metrics['trained_map']:.3f} vs random init {metrics['random_map']:.3f} "
          f"class mAP ({metrics['ratio']:.2f}x; motion classes {metrics['trained_motion_map']:.3f} vs "
          f"{metrics['random_motion_map']:.3f})")
    print(f"   data wait after the first epoch: {100 * metrics['data_wait_fraction_after_first_epoch']:.1f}% of step "
          f"time with the clip cache (decode every {recipe.decode_every} epochs; first epoch "
          f"{100 * metrics['data_wait_fraction_epoch1']:.1f}%), "
          f"{100 * metrics['uncached_data_wait_fraction_after_first_epoch']:.1f}% decoding every epoch (target < 10%)")
    return metrics
