"""Video datasets and loaders for backbone training: decoding in worker processes.

::

    EpochSampler ---(epoch, i) keys---> worker: TrainClips[(epoch, i)]  -> example or None
                                                collate_train          -> {"x", "y", "skipped"}
    range(n) ------------- i -------->  worker: EvalClips[i]           -> (i, (K, ...) clips) or None
                                                collate_eval           -> {"x", "rows", "counts", "skipped"}

* **Repeatable.** Example ``i`` of epoch ``e`` draws its clip position and augmentation
  from ``keyed_rng(seed, e, i)`` and the shuffle of epoch ``e`` from
  ``keyed_rng(seed, e)``, so the batches do not depend on the number of workers, on
  which worker decodes what, or on whether the run was interrupted and resumed. The key
  carries the epoch, so persistent workers need no message when an epoch starts.
* **Bad videos** (any :class:`~extract.media.decode.DecodeError`: missing, corrupt, no audio for an
  audio net) give a logged warning and ``None``; the collate functions drop them and count
  them in ``skipped``. An epoch never stops for one file.
* A video's frame count and rate come from the table (``n_frames``/``fps`` columns, as a
  store's ``videos()`` has them) or from its header, probed once per worker and cached.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from extract.media.decode import DecodeError, probe_video
from extract.training.modality import ModalityInputs, VideoMeta
from heads.seeding import keyed_rng

log = logging.getLogger(__name__)


class _Videos:
    """Paths, labels and (lazily probed) frame counts of a list of videos."""

    def __init__(self, videos: pd.DataFrame, labels: np.ndarray, timeout_s: float) -> None:
        if len(videos) != len(labels):
            raise ValueError(f"{len(videos)} videos but {len(labels)} label rows")
        self.paths = [str(p) for p in videos["path"]]
        self.labels = np.asarray(labels, dtype=np.float32)  # (N, C)
        known = {}
        if {"n_frames", "fps"} <= set(videos.columns):
            for i, (n, fps) in enumerate(zip(videos["n_frames"], videos["fps"])):
                if n is not None and fps is not None and int(n) > 0 and float(fps) > 0:
                    known[i] = VideoMeta(self.paths[i], int(n), float(fps))
        self._meta: dict[int, VideoMeta] = known
        self.timeout_s = timeout_s

    def __len__(self) -> int:
        return len(self.paths)

    def meta(self, i: int) -> VideoMeta:
        if i not in self._meta:  # cached in this (worker) process
            info = probe_video(self.paths[i], timeout_s=self.timeout_s)
            self._meta[i] = VideoMeta(self.paths[i], info.n_frames, info.fps)
        return self._meta[i]


class TrainClips(Dataset):
    """Training examples: one random, augmented example per video and epoch.

    Args:
        videos: table with a ``path`` column (optionally ``n_frames`` and ``fps``).
        labels: ``(N, C)`` multi-hot labels, row-aligned with ``videos``.
        inputs: the modality's example maker.
        seed: base seed of the clip positions and augmentations.
        timeout_s: per-video time limit for probing.
    """

    def __init__(self, videos: pd.DataFrame, labels: np.ndarray, inputs: ModalityInputs, *, seed: int,
                 timeout_s: float = 60.0) -> None:
        self.videos = _Videos(videos, labels, timeout_s)
        self.inputs = inputs
        self.seed = seed

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        epoch, i = key
        rng = keyed_rng(self.seed, epoch, i)
        try:
            x = self.inputs.train_example(self.videos.meta(i), rng)
        except DecodeError as err:
            log.warning("skipped a training video: %s", err)
            return None
        return x, self.videos.labels[i]


class EvalClips(Dataset):
    """Evaluation clips: the deterministic clips of every video, ``(i, (K, ...))``."""

    def __init__(self, videos: pd.DataFrame, labels: np.ndarray, inputs: ModalityInputs,
                 timeout_s: float = 60.0) -> None:
        self.videos = _Videos(videos, labels, timeout_s)
        self.inputs = inputs

    @property
    def labels(self) -> np.ndarray:
        return self.videos.labels

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray] | None:
        try:
            return i, self.inputs.eval_clips(self.videos.meta(i))
        except DecodeError as err:
            log.warning("skipped a validation video: %s", err)
            return None


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, i)`` keys in a shuffled order that depends only on ``(seed, epoch)``."""

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = keyed_rng(self.seed, self.epoch).permutation(self.n) if self.shuffle else range(self.n)
        return iter([(self.epoch, int(i)) for i in order])


def collate_train(items: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> dict[str, Any]:
    """Stack the good examples: ``x (B, ...)``, ``y (B, C)``; ``x`` is None when all failed."""
    good = [it for it in items if it is not None]
    skipped = len(items) - len(good)
    if not good:
        return {"x": None, "y": None, "skipped": skipped}
    x = torch.from_numpy(np.stack([g[0] for g in good]))  # B x (...) -> (B, ...)
    y = torch.from_numpy(np.stack([g[1] for g in good]))  # B x (C,) -> (B, C)
    return {"x": x, "y": y, "skipped": skipped}


def collate_eval(items: Sequence[tuple[int, np.ndarray] | None]) -> dict[str, Any]:
    """Concatenate the clips of several videos: ``x (sum K, ...)``, ``rows (b,)``, ``counts (b,)``."""
    good = [it for it in items if it is not None]
    skipped = len(items) - len(good)
    if not good:
        return {"x": None, "rows": [], "counts": [], "skipped": skipped}
    x = torch.from_numpy(np.concatenate([g[1] for g in good]))  # b x (K_i, ...) -> (sum K_i, ...)
    return {"x": x, "rows": [g[0] for g in good], "counts": [len(g[1]) for g in good], "skipped": skipped}


def _worker_init(worker_id: int, seed: int) -> None:
    """Seed every global generator of a worker (the examples use their own keyed rng)."""
    np.random.seed([seed, worker_id])
    random.seed(seed * 1000 + worker_id)
    torch.manual_seed(seed * 1000 + worker_id)
    torch.set_num_threads(1)  # the workers share the cores with the model


def _loader(dataset: Dataset, *, workers: int, seed: int, pin: bool, **kw: Any) -> DataLoader:
    extra: dict[str, Any] = {}
    if workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": 4,
                 "worker_init_fn": functools.partial(_worker_init, seed=seed)}
    # an explicit generator keeps DataLoader's base-seed draw off the global torch RNG (dropout)
    return DataLoader(dataset, num_workers=workers, pin_memory=pin,
                      generator=torch.Generator().manual_seed(seed), **extra, **kw)


def train_loader(dataset: TrainClips, *, batch_size: int, workers: int, pin: bool = False) -> DataLoader:
    """Shuffled training batches; call ``loader.sampler.set_epoch(e)`` before each epoch.

    The last incomplete batch is dropped when there is more than one batch (BatchNorm needs
    more than one example per batch).
    """
    sampler = EpochSampler(len(dataset), dataset.seed)
    return _loader(dataset, workers=workers, seed=dataset.seed, pin=pin, sampler=sampler, batch_size=batch_size,
                   drop_last=len(dataset) > batch_size, collate_fn=collate_train)


def eval_loader(dataset: EvalClips, *, videos_per_batch: int, workers: int, seed: int = 0,
                pin: bool = False) -> DataLoader:
    """Batches of whole videos, in row order."""
    return _loader(dataset, workers=workers, seed=seed, pin=pin, batch_size=videos_per_batch, shuffle=False,
                   collate_fn=collate_eval)
