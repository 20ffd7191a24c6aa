"""``fit``: train a backbone on videos, evaluate on val every epoch, checkpoint, resume, SWA.

::

    fit(recipe, data, out_dir)
      build the backbone (seeded) -> resolve the recipe -> freeze all but the last k stages
      for each epoch:   train (AMP on CUDA, grad clipping, mixup)  -> SWA snapshot (last n epochs)
                        -> evaluate on val (deterministic clips, averaged) -> best.pt, last.pt, metrics.json
      backbone.pt; with SWA: BatchNorm statistics update -> evaluate -> backbone_swa.pt

Resume (``resume=True``) restores model, optimizer, grad scaler, SWA average, step and the
torch RNG from ``last.pt``; the data order and augmentations are keyed by (seed, epoch,
index) (``extract.training.data``), so on a CPU a resumed run ends with exactly the
weights of an uninterrupted one.

Data wait: per epoch, the time the loop spent blocked on the loader divided by the total
step time, without each epoch's first batch (worker start-up; reported on its own).

Decoded clips are kept in a clip cache (``cache_dir``, by default ``out_dir/clip_cache``;
:mod:`extract.training.clip_cache`): a video is decoded once per ``recipe.decode_every``
epochs, and the validation clips once. With the cache, the training examples are read in this
process, by a background thread that makes the next batches while the model computes
(:func:`heads.prefetch.prefetched`), and the ``workers`` decode the next epoch's generations ahead
(:mod:`extract.training.prebuild`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from extract.backbones import DEFAULT, Backbone, get_backbone
from extract.errors import ExtractError
from extract.media.torchcodec_decode import require_torchcodec
from extract.training import checkpoint as ckpt
from extract.training.data import EvalClips, TrainClips, eval_loader, train_loader
from extract.training.evaluate import predict_videos
from extract.training.freeze import freeze_all_but_last, set_train_mode
from extract.training.modality import make_inputs
from extract.training.prebuild import Prebuilder
from extract.training.recipe import RESUMABLE_CHANGES, TrainRecipe
from heads.losses import class_weights, get_loss
from heads.metrics import evaluate as evaluate_scores
from heads.mixup import draw_mix, mix_batch
from heads.prefetch import prefetched
from heads.seeding import keyed_rng
from heads.swa import make_averager, update_bn
from store.device import resolve_device
from store.threads import available_cores

log = logging.getLogger(__name__)

IN_CHANNELS = {"rgb": 3, "flow": 2, "audio": 1}
#: ``fit(cache_dir=AUTO_CACHE)``: the clip cache lives in ``out_dir/clip_cache``.
AUTO_CACHE = "auto"
CACHE_DIR = "clip_cache"
#: Training batches made ahead by the background thread when the examples are read in this process.
PREFETCH_BATCHES = 2


class TrainError(ExtractError):
    """A training run cannot start or go on; the message says what to do."""


@dataclass(frozen=True)
class TrainData:
    """The videos of a run.

    Attributes:
        train: training videos, a ``path`` column (optionally ``n_frames``, ``fps``).
        train_labels: ``(N, C)`` multi-hot, row-aligned with ``train``.
        val: validation videos (may be empty: no evaluation, no best.pt).
        val_labels: ``(M, C)`` multi-hot.
        classes: class names, index = label id.
    """

    train: pd.DataFrame
    train_labels: np.ndarray
    val: pd.DataFrame
    val_labels: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        if len(self.train) == 0:
            raise TrainError("no training videos: the list needs rows in the 'train' split")
        c = len(self.classes)
        for name, labels, table in (("train", self.train_labels, self.train), ("val", self.val_labels, self.val)):
            if np.asarray(labels).shape != (len(table), c):
                raise TrainError(f"{name} labels have shape {np.asarray(labels).shape}, expected ({len(table)}, {c})")


@dataclass
class TrainResult:
    """What a finished run wrote (paths) and measured (history: one dict per epoch)."""

    out_dir: Path
    recipe: TrainRecipe
    history: list[dict[str, Any]]
    best: dict[str, Any] | None
    swa: dict[str, Any] | None

    @property
    def backbone_path(self) -> Path:
        return self.out_dir / ckpt.FINAL

    @property
    def swa_path(self) -> Path | None:
        return self.out_dir / ckpt.SWA if self.swa is not None else None


def default_workers(device: torch.device) -> int:
    """Decode processes: min(4, cores) on a CPU (the model needs the cores too); cores - 1 with
    CUDA, where one core's decoding is far slower than the GPU (``extract.dump.settings``' rule)."""
    cores = available_cores()
    return max(1, cores - 1) if device.type == "cuda" else min(4, cores)


def build_backbone(recipe: TrainRecipe, num_classes: int) -> Backbone:
    """The backbone with a classifier for ``num_classes``: ``recipe.weights`` (None: the backbone's default
    weights) with a fresh classifier where theirs has another size, random parts from ``recipe.seed``."""
    torch.manual_seed(recipe.seed)
    return get_backbone(recipe.backbone, weights=recipe.weights or DEFAULT, in_channels=IN_CHANNELS[recipe.modality],
                        num_classes=num_classes, dropout=recipe.dropout)


class _Run:
    """One training run's state; :func:`fit` drives it."""

    def __init__(self, recipe: TrainRecipe, data: TrainData, out_dir: Path, *, workers: int, timeout_s: float,
                 cache_dir: Path | None, on_step: Callable[[int, int, int, float], None] | None) -> None:
        self.device = torch.device(resolve_device(recipe.device))
        try:
            self.model = build_backbone(recipe, len(data.classes))
        except ValueError as err:  # unknown name, or a builder refusing the modality's channels
            if isinstance(err, ExtractError):
                raise
            raise TrainError(f"{err} (--modality {recipe.modality} builds {recipe.backbone} with "
                             f"{IN_CHANNELS[recipe.modality]} input channel(s))") from None
        try:
            self.recipe = recipe.resolve(self.model.info)
            self.criterion = get_loss(recipe.loss, **recipe.loss_kwargs)
        except (KeyError, TypeError, ValueError) as err:  # recipe vs backbone, unknown loss or loss keyword
            raise TrainError(str(err).strip("\"'")) from None
        self.amp = bool(self.recipe.amp and self.device.type == "cuda")
        self.model.to(self.device)
        try:
            self.frozen = freeze_all_but_last(self.model, self.recipe.train_stages)
        except ValueError as err:
            raise TrainError(str(err)) from None
        self.data, self.out_dir, self.on_step = data, out_dir, on_step
        self.inputs = make_inputs(self.model, self.recipe, timeout_s)
        pin = self.device.type == "cuda"
        seed = self.recipe.seed
        train = TrainClips(data.train, data.train_labels, self.inputs, seed=seed, timeout_s=timeout_s,
                           cache_dir=cache_dir)
        # cached examples are read here; the workers decode the next epoch's generations ahead
        last = self.recipe.epochs if self.recipe.swa_epochs else self.recipe.epochs - 1  # SWA: one pass more
        self.prebuilder = Prebuilder(train, workers, last) if train.cache and workers else None
        self.train_loader = train_loader(train, batch_size=self.recipe.batch_size,
                                         workers=0 if self.prebuilder else workers, pin=pin)
        self.val_loader = None
        if len(data.val):
            self.val_loader = eval_loader(EvalClips(data.val, data.val_labels, self.inputs, timeout_s, cache_dir),
                                          videos_per_batch=max(1, self.recipe.batch_size // self.recipe.eval_clips),
                                          workers=workers, seed=seed, pin=pin)
        self.steps_per_epoch = len(self.train_loader)
        self.schedule = self.recipe.lr_schedule(self.steps_per_epoch)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self._optimizer()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.class_weights = None
        if self.recipe.class_weights != "none":
            self.class_weights = class_weights(data.train_labels, self.recipe.class_weights).to(self.device)
        self.swa = make_averager(self.model) if self.recipe.swa_epochs else None
        self.epoch = self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    def _optimizer(self) -> torch.optim.Optimizer:
        decay = [p for p in self.params if p.ndim > 1]
        rest = [p for p in self.params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": self.recipe.weight_decay},
                  {"params": rest, "weight_decay": 0.0}]
        r = self.recipe
        if r.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=r.lr, betas=(r.momentum or 0.9, 0.999))
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.momentum > 0)

    # ------------------------------------------------------------------ checkpoints
    def save_last(self) -> None:
        ckpt.save_torch({
            "model": ckpt.cpu_state_dict(self.model), "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(), "swa": self.swa.state_dict() if self.swa else None,
            "scheduler": {"step": self.step, "steps_per_epoch": self.steps_per_epoch},
            "epoch": self.epoch, "rng": ckpt.rng_state(), "history": self.history, "best": self.best,
            "recipe": self.recipe.to_dict(), "classes": list(self.data.classes),
        }, self.out_dir / ckpt.LAST)

    def restore(self, state: dict[str, Any]) -> None:
        saved = TrainRecipe.from_dict(state["recipe"])
        diffs = [d for d in self.recipe.differences(saved) if d.split(":")[0] not in RESUMABLE_CHANGES]
        if diffs:
            raise TrainError(f"{self.out_dir} was trained with another recipe ({'; '.join(diffs)}; yours first); "
                             "drop the changed flags to resume, or pass a new --out")
        if list(state["classes"]) != list(self.data.classes):
            raise TrainError(f"{self.out_dir} was trained on {len(state['classes'])} other classes; resume with the "
                             "same video list and class list, or pass a new --out")
        if state["scheduler"]["steps_per_epoch"] != self.steps_per_epoch:
            raise TrainError(f"{self.out_dir} had {state['scheduler']['steps_per_epoch']} steps per epoch, this "
                             f"video list gives {self.steps_per_epoch}; resume with the same videos")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.swa is not None:
            self.swa.load_state_dict(state["swa"])
        self.epoch, self.step = int(state["epoch"]), int(state["scheduler"]["step"])
        self.history, self.best = list(state["history"]), state["best"]
        ckpt.set_rng_state(state["rng"])
        log.info("resumed %s after epoch %d (step %d)", self.out_dir, self.epoch, self.step)

    # ------------------------------------------------------------------ one epoch
    def _model_input(self, batch: dict[str, Any], key: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch["x"].to(self.device, non_blocking=True)
        y = batch["y"].to(self.device, non_blocking=True)
        draw = draw_mix(len(x), self.recipe.mixup_alpha, keyed_rng(*key)) if key is not None else None
        if draw is not None and self.inputs.mix_before_model_input:
            x, y, _ = mix_batch(x.float(), y, draw)
        x = self.inputs.to_model(x)
        if draw is not None and not self.inputs.mix_before_model_input:
            x, y, _ = mix_batch(x, y, draw)
        return x, y

    def train_epoch(self) -> dict[str, Any]:
        set_train_mode(self.model, self.frozen)
        self.train_loader.sampler.set_epoch(self.epoch)
        if self.prebuilder is not None:
            self.prebuilder.submit(self.epoch)  # what is still missing (the first epoch, a resume)
            self.prebuilder.submit(self.epoch + 1)
        t_epoch = time.perf_counter()
        batches = iter(self.train_loader)
        if self.train_loader.num_workers == 0:  # read in this process: a thread makes the next ones meanwhile
            batches = prefetched(batches, PREFETCH_BATCHES)
        try:
            return self._train_steps(batches, t_epoch)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:  # stops the prefetch thread (an exception mid-epoch) and the loader
                close()

    def _train_steps(self, batches: Iterator[dict[str, Any]], t_epoch: float) -> dict[str, Any]:
        losses, wait, busy, first_wait, skipped, examples = [], 0.0, 0.0, 0.0, 0, 0
        for b in range(self.steps_per_epoch):
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            lr = self.schedule(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.step += 1
            skipped += batch["skipped"]
            if batch["x"] is None:
                continue
            mix_key = [self.recipe.seed, self.epoch, b] if self.recipe.mixup_alpha > 0 else None
            x, y = self._model_input(batch, mix_key)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = self.model(x)
            loss = self.criterion(logits.float(), y, weight=self.class_weights)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.recipe.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            value = loss.item()  # waits for the device: the step's time is complete
            if not math.isfinite(value):
                raise TrainError(f"the loss became {value} at epoch {self.epoch + 1}, step {b + 1}; lower --lr, "
                                 "raise --warmup-epochs or set --grad-clip")
            losses.append(value)
            examples += len(x)
            t2 = time.perf_counter()
            if b == 0:
                first_wait = t1 - t0
            else:
                wait, busy = wait + (t1 - t0), busy + (t2 - t0)
            if self.on_step:
                self.on_step(self.epoch, b, self.steps_per_epoch, value)
        if skipped:
            log.warning("epoch %d: %d training examples skipped (videos that could not be decoded)",
                        self.epoch + 1, skipped)
        return {"epoch": self.epoch + 1, "lr": lr, "train_loss": float(np.mean(losses)) if losses else math.nan,
                "steps": self.steps_per_epoch, "examples": examples, "skipped_train": skipped,
                "data_wait_fraction": wait / busy if busy > 0 else math.nan, "first_batch_wait_s": first_wait,
                "train_seconds": time.perf_counter() - t_epoch}

    def validate(self, model: Backbone) -> dict[str, Any]:
        if self.val_loader is None:
            return {}
        t = time.perf_counter()
        scores, ok, skipped = predict_videos(model, self.val_loader, self.inputs, len(self.data.val),
                                             device=self.device, amp=self.amp, chunk=self.recipe.batch_size)
        out: dict[str, Any] = {"val_videos": int(ok.sum()), "skipped_val": skipped}
        labels = self.data.val_labels[ok]
        if ok.any():
            with torch.no_grad():
                out["val_loss"] = float(self.criterion(torch.from_numpy(scores[ok]), torch.from_numpy(labels).float()))
            try:
                out.update(evaluate_scores(scores[ok], labels))
            except ValueError as err:  # e.g. no positive label among the decodable val videos
                log.warning("no val metrics: %s", err)
        out["val_seconds"] = time.perf_counter() - t
        return out

    def end_epoch(self, entry: dict[str, Any]) -> None:
        if self.swa is not None and self.epoch >= self.recipe.epochs - self.recipe.swa_epochs:
            self.swa.update_parameters(self.model)
            entry["swa_snapshots"] = int(self.swa.n_averaged)
        entry.update(self.validate(self.model))
        self.epoch += 1
        self.history.append(entry)
        score = entry.get("class_map")
        if score is not None and (self.best is None or score > self.best["class_map"]):
            self.best = {"epoch": entry["epoch"], "class_map": score}
            ckpt.save_torch(ckpt.cpu_state_dict(self.model), self.out_dir / ckpt.BEST)
        self.save_last()
        self.write_metrics(None)

    # ------------------------------------------------------------------ the end
    def finish_swa(self) -> dict[str, Any]:
        model = self.swa.module
        self.train_loader.sampler.set_epoch(self.recipe.epochs)  # a fresh, still keyed, pass
        batches = (self.inputs.to_model(b["x"].to(self.device, non_blocking=True))
                   for b in self.train_loader if b["x"] is not None)
        n = update_bn(model, batches, frozen_norms=self.frozen)
        entry = {"snapshots": int(self.swa.n_averaged), "bn_batches": n, **self.validate(model)}
        ckpt.save_torch(ckpt.cpu_state_dict(model), self.out_dir / ckpt.SWA)
        return entry

    def write_metrics(self, swa: dict[str, Any] | None) -> None:
        ckpt.save_json({"recipe": self.recipe.to_dict(), "classes": len(self.data.classes),
                        "train_videos": len(self.data.train), "val_videos": len(self.data.val),
                        "device": str(self.device), "amp": self.amp, "epochs": self.history, "best": self.best,
                        "swa": swa}, self.out_dir / ckpt.METRICS_JSON)


def fit(recipe: TrainRecipe, data: TrainData, out_dir: str | Path, *, resume: bool = False,
        workers: int | None = None, timeout_s: float = 60.0, cache_dir: str | Path | None = AUTO_CACHE,
        on_step: Callable[[int, int, int, float], None] | None = None,
        on_epoch_end: Callable[[int, Backbone, dict[str, Any]], None] | None = None) -> TrainResult:
    """Train a backbone (see the module docstring); seeds the global torch generator.

    Args:
        recipe: the recipe (``None`` fields are resolved from the backbone).
        data: train and val videos with labels.
        out_dir: where the files go (``extract.training.checkpoint``); created if missing.
        resume: continue from ``out_dir/last.pt`` (a fresh start when there is none).
        workers: decode worker processes (0 = decode in this process); None =
            :func:`default_workers`.
        timeout_s: per-video decode time limit.
        cache_dir: the clip cache's folder (:mod:`extract.training.clip_cache`); ``"auto"`` =
            ``out_dir/clip_cache``; None = no cache (each example decodes its own clip: the
            same batches, more decoding).
        on_step: called after each step with (epoch, step, steps per epoch, loss).
        on_epoch_end: called after each epoch's checkpoint with (epoch, model, history entry).

    Raises:
        TrainError: the run cannot start (existing run without ``resume``, other recipe...)
            or diverged.
        ExtractError: ``recipe.decoder`` is ``torchcodec`` and torchcodec cannot be imported.
    """
    if recipe.decoder == "torchcodec":
        require_torchcodec()  # one error saying how to install it, before out_dir is made
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last = out_dir / ckpt.LAST
    if last.exists() and not resume:
        raise TrainError(f"{out_dir} already holds a training run ({ckpt.LAST}); pass --resume to continue it, "
                         "or choose another --out")
    workers = default_workers(torch.device(resolve_device(recipe.device))) if workers is None else workers
    cache = out_dir / CACHE_DIR if cache_dir == AUTO_CACHE else cache_dir
    run = _Run(recipe, data, out_dir, workers=workers, timeout_s=timeout_s,
               cache_dir=Path(cache) if cache is not None else None, on_step=on_step)
    try:
        return _fit(run, resume=resume, on_epoch_end=on_epoch_end)
    finally:
        if run.prebuilder is not None:
            run.prebuilder.close()


def _fit(run: _Run, *, resume: bool,
         on_epoch_end: Callable[[int, Backbone, dict[str, Any]], None] | None) -> TrainResult:
    out_dir, last = run.out_dir, run.out_dir / ckpt.LAST
    if resume and last.exists():
        run.restore(ckpt.load_checkpoint(last))
    elif resume:
        log.info("%s has no %s: starting a new run", out_dir, ckpt.LAST)
    ckpt.save_json(run.recipe.to_dict(), out_dir / ckpt.RECIPE_JSON)
    while run.epoch < run.recipe.epochs:
        entry = run.train_epoch()
        run.end_epoch(entry)
        log.info("epoch %d/%d: %s", run.epoch, run.recipe.epochs,
                 ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if isinstance(v, float)))
        if on_epoch_end:
            on_epoch_end(run.epoch, run.model, entry)
    ckpt.save_torch(ckpt.cpu_state_dict(run.model), out_dir / ckpt.FINAL)
    swa = run.finish_swa() if run.swa is not None else None
    run.write_metrics(swa)
    return TrainResult(out_dir=out_dir, recipe=run.recipe, history=run.history, best=run.best, swa=swa)


__all__ = ["AUTO_CACHE", "CACHE_DIR", "TrainData", "TrainError", "TrainResult", "build_backbone", "default_workers",
           "fit", "predict_videos"]
