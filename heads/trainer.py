"""Training a head on cached features: :class:`TrainConfig` and :func:`train_head`.

::

    store ── FeatureCache (RAM) or ChunkShuffleDataset (stream) ──> batches (B, K, D), mask, labels
                 |
       folds?  k models, each on k-1 folds of train     |  one model on all train rows
                 |                                      |
         fit(): AdamW/Adam, warm-up + cosine, clipping, mixup, early stop on val class mAP,
                SWA/EMA + mask-aware BN update, a resumable snapshot every epoch
                 |
    predictions for every row, in row blocks -> store.prediction_writer(run): (N, C) sigmoid, fold (N,)
    run dir: checkpoint.pt, config.json, metrics.json

:func:`train_head` is pure of global state (torch's RNG is forked, the deterministic-algorithms
flag restored), so a sweep may call it from Dask tasks; pass ``data=FeatureCache.load(...)`` to
read the features once for many configurations. See ``heads/README_train.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from heads._fit import FitResult, evaluate_scores, fit, predict
from heads._train_data import FeatureCache, Source, TrainError, make_source
from heads.losses import get_loss
from heads.registry import get_head, get_head_builder
from heads.seeding import derive_seed
from heads.swa import AVERAGING
from store.cli import setting_name
from store.device import resolve_device
from store.errors import SettingsError
from store.feature_store import FeatureStore

__all__ = ["FeatureCache", "TrainConfig", "TrainError", "TrainResult", "assign_folds", "build_head",
           "evaluate_scores", "fit", "make_source", "predict", "train_head"]

log = logging.getLogger(__name__)

PREDICT_BLOCK_ROWS = 65_536  # store rows predicted and written at a time (whole chunks of the prediction run)
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")  # the store's rule for prediction run names
_CHOICES = {"optimizer": ("adam", "adamw"), "swa": AVERAGING, "class_weights": ("none", "sqrt", "linear"),
            "reader": ("auto", "memory", "stream")}
#: The allowed range of each checked number, for the error message.
_RANGES = {"lr": "must be > 0", "weight_decay": "must be >= 0", "epochs": "must be >= 1",
           "batch_size": "must be >= 2", "warmup": "must be >= 0", "grad_clip": "must be >= 0 (0: off)",
           "dropout": "must be in [0, 1)", "mixup_alpha": "must be >= 0 (0: off)",
           "patience": "must be >= 0 (0: off)", "ema_decay": "must be in (0, 1)",
           "folds": "must be 0 (off) or >= 2", "swa_start": "must be >= 0 and below the epochs"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a head training run computes.

    Attributes:
        features: Feature sets concatenated per clip (same K) as the head's input.
        head: Registered head name (``heads.registry.list_heads()``).
        head_kwargs: The head builder's own keywords (``num_clusters``, ``classifier``...).
        loss: Registered loss name (``heads.losses.list_losses()``).
        loss_kwargs: The loss's keywords.
        optimizer: ``adamw`` or ``adam``.
        lr: Peak learning rate.
        weight_decay: Decoupled (AdamW) or L2 (Adam) weight decay.
        epochs: Maximum number of epochs.
        batch_size: Rows per training step.
        warmup: Epochs of linear learning-rate warm-up (fractions allowed).
        cosine: Cosine decay to 0 after the warm-up (else constant).
        grad_clip: Maximum gradient L2 norm (0: no clipping).
        dropout: The head's dropout (passed as its ``dropout`` keyword).
        mixup_alpha: Feature-space mixup ``Beta(a, a)`` (0: off).
        patience: Stop after this many epochs without a better val class mAP (0: never).
        swa: ``none``, ``swa`` (equal average of epoch-end weights) or ``ema`` (every step).
        swa_start: First epoch averaged (None: 75% of ``epochs`` for swa, 0 for ema).
        ema_decay: EMA decay per step.
        seed: Seeds the initialisation, batch order, mixup, dropout and folds.
        folds: 0 for one model; k >= 2 for k-fold out-of-fold predictions of the train rows.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``. Not in the hash.
        class_weights: Loss class weights from train label counts: ``none``, ``sqrt``, ``linear``.
        reader: ``auto`` (RAM when the features take < 1/8 of the available RAM), ``memory``, ``stream``.
    """

    features: tuple[str, ...]
    head: str = "netvlad"
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    loss: str = "bce"
    loss_kwargs: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    epochs: int = 20
    batch_size: int = 256
    warmup: float = 1.0
    cosine: bool = True
    grad_clip: float = 5.0
    dropout: float = 0.0
    mixup_alpha: float = 0.0
    patience: int = 5
    swa: str = "none"
    swa_start: int | None = None
    ema_decay: float = 0.999
    seed: int = 0
    folds: int = 0
    device: str = "auto"
    class_weights: str = "none"
    reader: str = "auto"

    def __post_init__(self) -> None:
        features = (self.features,) if isinstance(self.features, str) else tuple(self.features)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "head_kwargs", dict(self.head_kwargs))
        object.__setattr__(self, "loss_kwargs", dict(self.loss_kwargs))
        if not features or len(set(features)) != len(features):
            raise SettingsError(f"{setting_name('features')} must name one or more distinct feature sets, "
                             f"got {list(features)}")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise SettingsError(f"{setting_name(name)} must be one of {', '.join(choices)}; "
                                 f"got {getattr(self, name)!r}")
        checks = [("lr", self.lr > 0), ("weight_decay", self.weight_decay >= 0), ("epochs", self.epochs >= 1),
                  ("batch_size", self.batch_size >= 2), ("warmup", self.warmup >= 0),
                  ("grad_clip", self.grad_clip >= 0), ("dropout", 0 <= self.dropout < 1),
                  ("mixup_alpha", self.mixup_alpha >= 0), ("patience", self.patience >= 0),
                  ("ema_decay", 0 < self.ema_decay < 1), ("folds", self.folds == 0 or self.folds >= 2),
                  ("swa_start", self.swa_start is None or 0 <= self.swa_start < self.epochs)]
        for name, ok in checks:
            if not ok:
                raise SettingsError(f"invalid {setting_name(name)} {getattr(self, name)!r}: {_RANGES[name]}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise SettingsError(f"{setting_name('device')} must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        self._check_builder_kwargs()

    def _check_builder_kwargs(self) -> None:
        try:
            head_params = set(inspect.signature(get_head_builder(self.head)).parameters) - {"in_dim", "num_classes"}
            get_loss(self.loss, **self.loss_kwargs)  # builds a small module: checks names and values
        except (KeyError, TypeError) as exc:
            raise SettingsError(str(exc).strip("'\"")) from None
        unknown = sorted(set(self.head_kwargs) - head_params)
        if unknown:
            raise SettingsError(f"head {self.head!r} does not accept {', '.join(unknown)}; "
                             f"it accepts: {', '.join(sorted(head_params - {'dropout'}))}")
        if "dropout" in self.head_kwargs:
            raise SettingsError("set the head's dropout with --dropout / dropout, not with --head-arg / head_kwargs")
        if self.dropout and "dropout" not in head_params:
            raise SettingsError(f"head {self.head!r} has no dropout; leave --dropout / dropout at 0")
        try:
            json.dumps([self.head_kwargs, self.loss_kwargs])
        except TypeError as exc:
            raise SettingsError(f"--head-arg / head_kwargs and --loss-arg / loss_kwargs must be JSON values: {exc}") \
                from None

    def resolved_swa_start(self) -> int:
        """The first averaged epoch."""
        if self.swa_start is not None:
            return self.swa_start
        return int(0.75 * self.epochs) if self.swa == "swa" else 0

    def head_arguments(self) -> dict[str, Any]:
        """Keywords for the head builder (``head_kwargs`` plus the dropout, if the head has one)."""
        if "dropout" not in inspect.signature(get_head_builder(self.head)).parameters:
            return dict(self.head_kwargs)
        return {**self.head_kwargs, "dropout": self.dropout}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; the settings (TOML keys, and flags "
                             f"with -- and dashes) are {', '.join(sorted(names))}")
        return cls(**d)

    def config_hash(self) -> str:
        """Hex digest of everything that decides the result (all fields but ``device``)."""
        d = self.to_dict()
        d.pop("device")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def default_run_name(self) -> str:
        """``<head>-<loss>-<feature sets joined by '.'>-<hash[:8]>``."""
        return f"{self.head}-{self.loss}-{'.'.join(self.features)}-{self.config_hash()[:8]}"


@dataclass(frozen=True, eq=False)
class TrainResult:
    """What :func:`train_head` returns.

    Attributes:
        run_name: The prediction run's name in the store (and the default run directory).
        config: The configuration.
        metrics: The content of metrics.json (val/test/train_oof metrics, per-fold history, timing).
        scores: ``(N, C)`` float32 sigmoid scores of every row when the run was not written to the
            store (``write_predictions=False``); None when it was (read them with
            ``FeatureStore.read_predictions``: the scores are written in row blocks, never all held).
        fold: ``(N,)`` int16: the fold a train row was held out in (out-of-fold), else -1.
        model_states: One state dict per model (k with folds).
        out_dir: The run directory, or None when none was written.
    """

    run_name: str
    config: TrainConfig
    metrics: dict[str, Any]
    scores: np.ndarray | None
    fold: np.ndarray
    model_states: list[dict[str, torch.Tensor]]
    out_dir: Path | None


def assign_folds(n: int, k: int, seed: int) -> np.ndarray:
    """``(n,)`` fold ids in ``0..k-1``: a seeded permutation dealt out in turn (sizes differ by <= 1)."""
    folds = np.empty(n, dtype=np.int64)
    folds[np.random.default_rng(derive_seed(seed, "folds")).permutation(n)] = np.arange(n) % k
    return folds


def build_head(config: TrainConfig, in_dim: int, num_classes: int) -> torch.nn.Module:
    """The head of ``config`` for features of size ``in_dim``."""
    return get_head(config.head, in_dim=in_dim, num_classes=num_classes, **config.head_arguments())


@contextlib.contextmanager
def _isolated_torch(device: torch.device) -> Iterator[None]:
    """Fork torch's RNG and turn on deterministic algorithms; both restored on exit."""
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(det, warn_only=warn)


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf floats become None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load_resume_state(out_dir: Path | None, config: TrainConfig) -> dict[str, Any] | None:
    if out_dir is None:
        raise TrainError("resume needs the run directory (out_dir / --out) that holds state.pt")
    path = out_dir / "state.pt"
    if not path.is_file():
        log.warning("no %s to resume from: starting from scratch", path)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["config_hash"] != config.config_hash():
        raise TrainError(f"{out_dir} holds a run of another configuration (hash {state['config_hash']}); "
                         "drop --resume to start over there, or give the same settings")
    return state


def train_head(store: FeatureStore | str | Path, config: TrainConfig, *, run_name: str | None = None,
               out_dir: str | Path | None = None, data: FeatureCache | None = None, resume: bool = False,
               write_predictions: bool = True, progress: bool = True,
               on_epoch_end: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train the head of ``config`` (k fold models with ``folds``), predict every row, record it all.

    Args:
        store: The store (path or open FeatureStore; opened for writing if predictions are written).
        config: The settings.
        run_name: Prediction run name (default ``config.default_run_name()``).
        out_dir: Run directory for checkpoint.pt, config.json, metrics.json and the per-epoch
            state.pt (removed at the end); None writes no files and cannot resume.
        data: Features already in RAM (:meth:`FeatureCache.load`), shared between runs.
        resume: Continue from ``out_dir/state.pt`` (same config); the result equals an
            uninterrupted run's.
        write_predictions: Write the prediction run into the store.
        progress: Show tqdm bars.
        on_epoch_end: Called after every epoch with its record (for sweeps and tests).

    Returns:
        The :class:`TrainResult`.

    Raises:
        StoreError: unknown feature set, mismatched K between sets (ShapeMismatch), store missing.
        TrainError: fewer than 2 train rows done, no train labels, cache mismatch, bad resume dir.
    """
    fs = store if isinstance(store, FeatureStore) else FeatureStore.open(store, "a" if write_predictions else "r")
    if write_predictions and fs.mode == "r":
        fs = FeatureStore.open(fs.path, "a")
    run_name = run_name or config.default_run_name()
    if write_predictions and not _RUN_NAME.match(run_name):
        raise TrainError(f"invalid run name {run_name!r}: use letters, digits, '_', '-', '.' (not leading)")
    out = Path(out_dir) if out_dir is not None else None
    source = make_source(fs, config, data)
    device = torch.device(resolve_device(config.device))
    train_rows = np.intersect1d(fs.split_rows("train"), source.rows)
    val_rows = np.intersect1d(fs.split_rows("val"), source.rows)
    if len(train_rows) < 2:
        raise TrainError(f"only {len(train_rows)} train row(s) are done in {'+'.join(config.features)}: "
                         "extract features for the train split (or set the split column) first")
    if not source.labels(train_rows).any():
        raise TrainError("the train rows carry no labels; append the videos with their labels")
    fold_of = np.zeros(len(train_rows), np.int64)
    if config.folds:
        fold_of = assign_folds(len(train_rows), config.folds, config.seed)
    plans = [train_rows[fold_of != j] for j in range(config.folds)] if config.folds else [train_rows]
    state = _load_resume_state(out, config) if resume else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    finished: list[dict[str, Any]] = list(state["finished"]) if state else []
    common = {"config_hash": config.config_hash(), "config": config.to_dict()}

    with _isolated_torch(device):
        for j in range(len(finished), len(plans)):
            torch.manual_seed(derive_seed(config.seed, j, "init"))
            model = build_head(config, source.dim, len(fs.classes))
            current = state["current"] if state and state.get("current") and state["current"]["fold"] == j else None

            def save(snapshot: dict[str, Any]) -> None:
                _save_atomic({**common, "finished": finished, "current": snapshot}, out / "state.pt")

            res = fit(model, source, plans[j], val_rows, config, fold=j, device=device, state=current,
                      save_state=save if out is not None else None, on_epoch_end=on_epoch_end, progress=progress)
            finished.append(res.to_dict())
            if out is not None:
                _save_atomic({**common, "finished": finished, "current": None}, out / "state.pt")
        fits = [FitResult.from_dict(f) for f in finished]
        n, c = fs.n_videos, len(fs.classes)
        # Predictions go to the store PREDICT_BLOCK_ROWS rows at a time (the run appears once
        # complete); only without a store run are all (N, C) scores held, as TrainResult.scores.
        writing = fs.prediction_writer(run_name) if write_predictions else contextlib.nullcontext()
        with writing as writer:
            held = None if writer is not None else np.zeros((n, c), np.float32)

            def put(start: int, block: np.ndarray, fold: np.ndarray) -> None:
                if writer is not None:
                    writer.write(start, block, fold)
                else:
                    held[start:start + len(block)] = block

            kept, fold = _predict_all(fs, source, config, fits, train_rows, val_rows, fold_of, device, put)
            metrics = _metrics(fs, source, config, fits, kept, train_rows, run_name, device)
            if writer is not None:
                writer.attrs.update(_clean({
                    "head": config.head, "head_kwargs": config.head_kwargs, "loss": config.loss,
                    "loss_kwargs": config.loss_kwargs, "features": list(config.features), "config": config.to_dict(),
                    "config_hash": config.config_hash(), "folds": config.folds, "score_type": "sigmoid",
                    "missing_rows": metrics["rows"]["missing"], "run_dir": str(out) if out else None,
                    "metrics": {k: metrics[k] for k in ("val", "test", "train_oof")}}))

    result = TrainResult(run_name, config, metrics, held, fold, [f.state for f in fits], out)
    if out is not None:
        _write_run_dir(out, fs, source, result)
    return result


def _predict_all(fs: FeatureStore, source: Source, config: TrainConfig, fits: list[FitResult], train_rows: np.ndarray,
                 val_rows: np.ndarray, fold_of: np.ndarray, device: torch.device,
                 put: Callable[[int, np.ndarray, np.ndarray], None]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]],
                                                                              np.ndarray]:
    """Score every row, :data:`PREDICT_BLOCK_ROWS` store rows at a time, each block handed to ``put``.

    ``put(start, scores (b, C), fold (b,))`` gets consecutive blocks: 0 for rows not done, the
    fold of out-of-fold train rows (else -1). Every row is scored once per model that predicts
    it; each fit's ``val`` metrics come from those same predictions (the val rows are not
    scored again). Besides one block, only the evaluated rows' scores are kept, for the metrics.

    Returns:
        ``({split: (rows, scores (n_split, C))}`` for val, test and, with folds, train (out of
        fold); the ``(N,)`` int16 fold of every row).
    """
    models = []
    for f in fits:
        m = build_head(config, source.dim, len(fs.classes)).to(device)
        m.load_state_dict(f.state)
        models.append(m)
    n, c = fs.n_videos, len(fs.classes)
    fold = np.full(n, -1, np.int16)
    splits = {"val": val_rows, "test": np.intersect1d(fs.split_rows("test"), source.rows)}
    if config.folds:
        splits["train"] = train_rows
    kept = {s: (r, np.empty((len(r), c), np.float32)) for s, r in splits.items()}  # (n_s, C)
    # with folds, each model's own scores of the val rows, for its val metrics
    own_val = [np.empty((len(val_rows), c), np.float32) for _ in models] if config.folds else []
    for a in range(0, n, PREDICT_BLOCK_ROWS):
        b = min(a + PREDICT_BLOCK_ROWS, n)
        rows = source.rows[np.searchsorted(source.rows, a):np.searchsorted(source.rows, b)]  # done rows in [a, b)
        block = np.zeros((b - a, c), np.float32)
        if not config.folds:
            if len(rows):
                block[rows - a] = predict(models[0], source, rows, device=device)
        else:
            pos = np.minimum(np.searchsorted(train_rows, rows), len(train_rows) - 1)
            in_train = train_rows[pos] == rows
            for j, m in enumerate(models):
                held_out = rows[in_train & (fold_of[pos] == j)]
                if len(held_out):
                    block[held_out - a] = predict(m, source, held_out, device=device)
                    fold[held_out] = j
            rest = rows[~in_train]  # val rows are among them (train and val never overlap)
            if len(rest):
                lo, hi = np.searchsorted(val_rows, [a, b])
                at_val = np.searchsorted(rest, val_rows[lo:hi])
                total = np.zeros((len(rest), c), np.float32)
                for j, m in enumerate(models):
                    part = predict(m, source, rest, device=device)
                    own_val[j][lo:hi] = part[at_val]
                    total += part
                block[rest - a] = total / len(models)
        put(a, block, fold[a:b])
        for r, scores in kept.values():
            lo, hi = np.searchsorted(r, [a, b])
            scores[lo:hi] = block[r[lo:hi] - a]
    val_labels = source.labels(val_rows) if len(val_rows) else None
    for j, f in enumerate(fits):
        val_scores = own_val[j] if config.folds else kept["val"][1]
        f.val = evaluate_scores(val_scores, val_labels) if val_labels is not None else None
    return kept, fold


def _metrics(fs: FeatureStore, source: Source, config: TrainConfig, fits: list[FitResult],
             kept: dict[str, tuple[np.ndarray, np.ndarray]], train_rows: np.ndarray, run_name: str,
             device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {s: evaluate_scores(kept[s][1], source.labels(kept[s][0])) for s in ("val", "test")}
    out["train_oof"] = evaluate_scores(kept["train"][1], source.labels(train_rows)) if config.folds else None
    rows, wall = sum(f.timing["rows"] for f in fits), sum(f.timing["train_s"] for f in fits)
    wait = sum(f.timing["wait_s"] for f in fits)
    epochs = sum(len(f.history) for f in fits)
    out.update(
        run_name=run_name, config_hash=config.config_hash(), reader=source.mode, device=str(device),
        rows={"train": len(train_rows), "val": len(kept["val"][0]), "test": len(kept["test"][0]),
              "predicted": len(source.rows), "missing": fs.n_videos - len(source.rows)},
        timing={"rows_per_s": rows / wall if wall else 0.0, "data_wait_fraction": wait / wall if wall else 0.0,
                "epoch_s": wall / max(epochs, 1), "train_s": wall, "epochs": epochs},
        folds=[{"fold": j, "best_epoch": f.best_epoch, "epochs_run": len(f.history), "averaged": f.averaged,
                "val": f.val, "history": f.history} for j, f in enumerate(fits)],
    )
    return _clean(out)


def _write_run_dir(out: Path, fs: FeatureStore, source: Source, result: TrainResult) -> None:
    cfg = result.config
    meta = {"run_name": result.run_name, "config_hash": cfg.config_hash(), "store": str(fs.path),
            "in_dim": source.dim, "clips": source.clips, "classes": fs.classes, "reader": source.mode,
            "device": result.metrics["device"]}
    _save_atomic({"config": cfg.to_dict(), **meta, "models": result.model_states}, out / "checkpoint.pt")
    (out / "config.json").write_text(json.dumps({"config": cfg.to_dict(), **meta}, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
    (out / "state.pt").unlink(missing_ok=True)
    log.info("wrote %s", out)
