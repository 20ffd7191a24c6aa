"""The epoch loop of one head: optimiser, schedule, mixup, early stopping, SWA/EMA, resume.

Randomness is re-derived at the start of every epoch from ``(seed, fold, epoch)``: the batch
order (the sources' own seeding), the mixup draws (a numpy generator) and dropout (torch's
generator, reseeded). A run resumed from the state saved after epoch ``e`` therefore trains
epoch ``e + 1`` exactly as the uninterrupted run did.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from heads._train_data import Batch, Source, n_batches
from heads.losses import class_weights, get_loss
from heads.metrics import evaluate
from heads.mixup import draw_mix, mix_batch
from heads.prefetch import prefetched
from heads.schedule import LRSchedule
from heads.seeding import derive_seed, keyed_rng
from heads.swa import make_averager, update_bn

if TYPE_CHECKING:
    from heads.trainer import TrainConfig

log = logging.getLogger(__name__)

PREDICT_BATCH = 1024


def evaluate_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, float] | None:
    """:func:`heads.metrics.evaluate`, or None when the rows carry no label at all."""
    if len(labels) == 0 or not labels.any():
        return None
    return evaluate(scores, labels)


@torch.inference_mode()
def predict(model: nn.Module, source: Source, rows: np.ndarray, *, device: torch.device | str = "cpu",
            batch_size: int = PREDICT_BATCH) -> np.ndarray:
    """Sigmoid probabilities ``(len(rows), C)`` of ``model`` (in evaluation mode) for ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    uniq, inverse = np.unique(rows, return_inverse=True)
    out: np.ndarray | None = None
    was_training = model.training
    model.eval()
    try:
        for batch in prefetched(source.batches(uniq, batch_size=batch_size, shuffle=False, seed=0, epoch=0,
                                               drop_last=False)):
            probs = torch.sigmoid(model(batch["features"].to(device), batch["mask"].to(device)).float())
            if out is None:
                out = np.zeros((len(uniq), probs.shape[1]), np.float32)
            out[np.searchsorted(uniq, batch["rows"].numpy())] = probs.cpu().numpy()
    finally:
        model.train(was_training)
    if out is None:
        raise ValueError("predict got no rows: pass at least one row done in the feature sets")
    return out[inverse]


@dataclass
class FitResult:
    """What :func:`fit` returns for one model."""

    state: dict[str, torch.Tensor]
    history: list[dict[str, float]]
    best_epoch: int | None
    averaged: bool
    val: dict[str, float] | None
    timing: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "history": self.history, "best_epoch": self.best_epoch,
                "averaged": self.averaged, "val": self.val, "timing": self.timing}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FitResult:
        return cls(**d)


def fit(model: nn.Module, source: Source, train_rows: np.ndarray, val_rows: np.ndarray, config: TrainConfig, *,
        fold: int = 0, device: torch.device | str = "cpu", state: dict[str, Any] | None = None,
        save_state: Callable[[dict[str, Any]], None] | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None, progress: bool = False) -> FitResult:
    """Train ``model`` on ``train_rows``, early-stopping on the class mAP of ``val_rows``.

    The val rows are scored after each epoch only when that can choose something: more than one
    epoch, and early stopping on (``patience``) or the best epoch kept (no SWA/EMA). With one
    epoch they are not scored here at all (the caller scores them once with the final weights).

    Args:
        model: A fresh head (or the one whose weights ``state`` restores).
        source: Where batches come from.
        train_rows, val_rows: Store rows (done in every feature set); ``val_rows`` may be empty
            (then every epoch runs and the last weights are kept).
        config: The run's settings.
        fold: Fold number (0 without folds); part of every derived seed.
        device: Where to train.
        state: A snapshot given to ``save_state`` earlier: training continues after it.
        save_state: Called with a snapshot after every epoch (for ``--resume``).
        on_epoch_end: Called with the epoch's record (``fold``, ``epoch``, ``loss``, val metrics...).
        progress: Show a tqdm bar over epochs.

    Returns:
        The final weights: the SWA/EMA average (batch norm recomputed) when averaging ran,
        else the best epoch on val, else the last epoch.
    """
    device = torch.device(device)
    model.to(device)
    loss_fn = get_loss(config.loss, **config.loss_kwargs).to(device)
    weight = None
    if config.class_weights != "none":
        weight = class_weights(source.labels(train_rows), config.class_weights).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls(params, lr=config.lr, weight_decay=config.weight_decay)
    drop_last = len(train_rows) > config.batch_size  # never a 1-row batch norm batch
    steps = n_batches(len(train_rows), config.batch_size, drop_last)
    warmup, total = round(config.warmup * steps), config.epochs * steps
    schedule = LRSchedule(config.lr, total, warmup, kind="cosine" if config.cosine else "constant")
    sched = LambdaLR(opt, schedule.factor)
    averager = make_averager(model, config.swa, ema_decay=config.ema_decay) if config.swa != "none" else None
    swa_start = config.resolved_swa_start()
    # The val rows are scored after an epoch only where that chooses something (the best epoch,
    # an early stop); the final weights' val scores come from the caller's pass over every row.
    chooses = config.epochs > 1 and (config.patience > 0 or config.swa == "none")
    val_labels = source.labels(val_rows) if chooses and len(val_rows) else np.zeros((0, 0), np.uint8)
    can_validate = bool(val_labels.any())
    order_seed = derive_seed(config.seed, fold, "order")

    st: dict[str, Any] = {"epoch": 0, "best_metric": -math.inf, "best_epoch": None, "best_state": None,
                          "bad_epochs": 0, "stopped": False, "history": [],
                          "timing": {"train_s": 0.0, "wait_s": 0.0, "rows": 0}}
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if averager is not None:
            averager.load_state_dict(state["averager"])
        st = {k: state[k] for k in st}
        log.info("fold %d: resuming after epoch %d", fold, st["epoch"])

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=st["epoch"], desc=f"fold {fold}" if config.folds else "epochs",
                   unit="epoch", leave=False)
    while st["epoch"] < config.epochs and not st["stopped"]:
        epoch = st["epoch"]
        torch.manual_seed(derive_seed(config.seed, fold, epoch, "torch"))
        mix_rng = keyed_rng(derive_seed(config.seed, fold, epoch, "mixup"))
        batches = source.batches(train_rows, batch_size=config.batch_size, shuffle=True, seed=order_seed,
                                 epoch=epoch, drop_last=drop_last)
        use_ema = averager is not None and config.swa == "ema" and epoch >= swa_start
        loss_sum, rows, wait, wall = _train_epoch(model, prefetched(batches), loss_fn, weight, opt, sched, config,
                                                  mix_rng, device, averager if use_ema else None)
        if averager is not None and config.swa == "swa" and epoch >= swa_start:
            averager.update_parameters(model)
        record: dict[str, Any] = {"fold": fold, "epoch": epoch, "loss": loss_sum / max(rows, 1),
                                  "lr": opt.param_groups[0]["lr"], "seconds": wall, "rows_per_s": rows / wall,
                                  "data_wait_fraction": wait / wall}
        timing = st["timing"]
        timing["train_s"] += wall
        timing["wait_s"] += wait
        timing["rows"] += rows
        if can_validate:
            val = evaluate(predict(model, source, val_rows, device=device), val_labels)
            record.update({f"val_{k}": v for k, v in val.items()})
            if val["class_map"] > st["best_metric"]:
                st.update(best_metric=val["class_map"], best_epoch=epoch, bad_epochs=0,
                          best_state=copy.deepcopy(model.state_dict()))
            else:
                st["bad_epochs"] += 1
        st["history"].append(record)
        st["epoch"] = epoch + 1
        st["stopped"] = bool(config.patience and st["bad_epochs"] >= config.patience)
        if save_state is not None:
            save_state({"fold": fold, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "averager": averager.state_dict() if averager is not None else None, **st})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", val_map=f"{record.get('val_class_map', float('nan')):.4f}")
        if on_epoch_end is not None:
            on_epoch_end(record)
        if st["stopped"]:
            log.info("fold %d: early stop after epoch %d (best %d)", fold, epoch, st["best_epoch"])
    if bar is not None:
        bar.close()
    return _finish(model, source, train_rows, config, fold, device, averager, drop_last, st)


def _train_epoch(model: nn.Module, batches: Iterator[Batch], loss_fn: nn.Module, weight: torch.Tensor | None,
                 opt: torch.optim.Optimizer, sched: LambdaLR, config: TrainConfig, mix_rng: np.random.Generator,
                 device: torch.device, ema: nn.Module | None) -> tuple[float, int, float, float]:
    """One pass over ``batches``: ``(loss sum, rows, seconds waiting for data, seconds in all)``."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    rows, wait = 0, 0.0
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        batch = next(batches, None)
        wait += time.perf_counter() - t0
        if batch is None:
            break
        x = batch["features"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        y = batch["labels"].to(device, non_blocking=True)
        if config.mixup_alpha > 0:
            draw = draw_mix(len(y), config.mixup_alpha, mix_rng, per_example=False)
            x, y, mask = mix_batch(x, y, draw, mask)
        loss = loss_fn(model(x, mask), y, weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.detach() * len(y)
        rows += len(y)
    total = float(loss_sum)  # synchronises with the device: the wall time below is honest
    return total, rows, wait, time.perf_counter() - start


def _finish(model: nn.Module, source: Source, train_rows: np.ndarray, config: TrainConfig, fold: int,
            device: torch.device, averager: Any, drop_last: bool, st: dict[str, Any]) -> FitResult:
    """Pick the final weights (averaged > best on val > last). Their val metrics are left to the
    caller, which scores the val rows once with every final model (``FitResult.val`` is None here)."""
    averaged = averager is not None and int(averager.n_averaged) > 0
    if averaged:
        final = averager.module
        torch.manual_seed(derive_seed(config.seed, fold, "bn"))
        batches = prefetched(source.batches(train_rows, batch_size=config.batch_size, shuffle=False, seed=0, epoch=0,
                                            drop_last=drop_last))
        update_bn(final, ((b["features"].to(device), b["mask"].to(device)) for b in batches))
    else:
        if averager is not None:
            log.warning("fold %d stopped before swa_start=%d: no average; keeping the best epoch", fold,
                        config.resolved_swa_start())
        final = model
        if st["best_state"] is not None:
            final.load_state_dict(st["best_state"])
    state = {k: v.detach().cpu().clone() for k, v in final.state_dict().items()}
    timing = dict(st["timing"])
    wall = timing["train_s"]
    timing.update(rows_per_s=timing["rows"] / wall if wall else 0.0,
                  data_wait_fraction=timing["wait_s"] / wall if wall else 0.0,
                  epoch_s=wall / max(1, len(st["history"])))
    return FitResult(state, st["history"], st["best_epoch"], averaged, None, timing)
