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
* **One decode per ``decode_every`` epochs.** Video ``i``'s epochs fall into generations of
  ``R = recipe.decode_every`` epochs, staggered by ``i % R`` (generation
  ``g = (e + i % R) // R``), so that every epoch decodes about ``1 / R`` of the videos
  instead of all of them. Example ``(e, i)`` draws its clip position, crop and flip from
  ``keyed_rng(seed, e, i)`` as always; the short side it is decoded at from
  ``keyed_rng(seed, "decode", g, i)``, once per generation. With a cache
  (:class:`~extract.training.clip_cache.ClipCache`) the first example of a generation decodes
  the clips of all its epochs in one :meth:`~extract.training.modality.ModalityInputs.decode_clips`
  call and stores them; the other epochs cut their clip from the stored arrays. Without one
  each example decodes its own clip: the batches are the same, decode for decode.
  Evaluation clips are the same every epoch and are cached once.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from extract.media.decode import DecodeError, probe_video
from extract.training.clip_cache import ClipCache, files_identity
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


#: The recipe fields that decoded training material depends on (the clip cache's key).
DATA_FIELDS = ("backbone", "modality", "crop", "short_side", "scale", "frames", "stride", "train_segments",
               "eval_clips", "every", "fps", "max_clips", "flow_algorithm", "flow_bound", "flow_params",
               "decode_every", "epochs", "decoder")


def open_cache(root: str | Path | None, inputs: ModalityInputs, paths: Sequence[str], role: str,
               seed: int | None = None) -> ClipCache | None:
    """The cache of ``role`` (``train``: with the examples' ``seed``; ``val``) for these videos and inputs under
    ``root`` (None: no cache)."""
    if root is None:
        return None
    recipe = inputs.recipe.to_dict()
    key = {"role": role, "inputs": type(inputs).__name__, "recipe": {k: recipe[k] for k in DATA_FIELDS},
           "seed": seed, "videos": files_identity(paths)}
    return ClipCache(root, key)


def generation(epoch: int, i: int, every: int) -> tuple[int, range]:
    """Video ``i``'s generation at ``epoch`` and the epochs it serves (``every`` epochs, staggered by ``i``)."""
    offset = i % every
    g = (epoch + offset) // every
    return g, range(max(0, g * every - offset), (g + 1) * every - offset)


class TrainClips(Dataset):
    """Training examples: one random, augmented example per video and epoch.

    Args:
        videos: table with a ``path`` column (optionally ``n_frames`` and ``fps``).
        labels: ``(N, C)`` multi-hot labels, row-aligned with ``videos``.
        inputs: the modality's example maker (its recipe's ``decode_every`` sets the generations).
        seed: base seed of the clip positions and augmentations.
        timeout_s: per-video time limit for probing.
        cache_dir: where decoded clips are kept between epochs
            (:mod:`extract.training.clip_cache`; None: each example decodes its own clip).
    """

    def __init__(self, videos: pd.DataFrame, labels: np.ndarray, inputs: ModalityInputs, *, seed: int,
                 timeout_s: float = 60.0, cache_dir: str | Path | None = None) -> None:
        self.videos = _Videos(videos, labels, timeout_s)
        self.inputs = inputs
        self.seed = seed
        self.every = inputs.recipe.decode_every if inputs.per_generation else 1
        useful = inputs.per_generation is False or self.every > 1  # one epoch per decode: nothing to keep
        self.cache = open_cache(cache_dir, inputs, self.videos.paths, "train", seed) if useful else None

    def __len__(self) -> int:
        return len(self.videos)

    def _decoded(self, epoch: int, i: int, clip: np.ndarray | None, ahead: bool = False
                 ) -> tuple[dict[str, np.ndarray], int]:
        """What example ``(epoch, i)`` is cut from, and its position there (``ahead``: built before the
        previous generation's last epoch, which keeps its entry)."""
        video, inputs = self.videos.meta(i), self.inputs
        if not inputs.per_generation:
            if self.cache is None:
                return inputs.decode_clips(video, [clip], None), 0
            return self.cache.get(self.entry_name(epoch, i), lambda: inputs.decode_clips(video, [], None)), 0
        g, epochs = generation(epoch, i, self.every)
        if self.cache is None:
            return inputs.decode_clips(video, [clip], inputs.draw_size(keyed_rng(self.seed, "decode", g, i))), 0

        def build() -> dict[str, np.ndarray]:
            # the run's epochs and the pass after them (SWA's batch-norm update) draw clips; later ones never do
            drawn = [e for e in epochs if e <= max(epoch, inputs.recipe.epochs)]
            clips = [inputs.draw_clip(video, keyed_rng(self.seed, e, i)) for e in drawn]
            size = inputs.draw_size(keyed_rng(self.seed, "decode", g, i))
            return {**inputs.decode_clips(video, clips, size), "covered": np.int64(len(drawn))}

        name, k = f"t{g}_{i}", epoch - epochs[0]
        decoded = self.cache.get(name, build)
        if g and k == 0 and not ahead:  # generation g starts: g - 1 is done with
            self.cache.drop(f"t{g - 1}_{i}")
        if k >= int(decoded["covered"]):  # an epoch past the run's end: this generation again, with it
            decoded = build()
            self.cache.store(name, decoded)
        return decoded, k

    def entry_name(self, epoch: int, i: int) -> str:
        """The cache entry example ``(epoch, i)`` is cut from."""
        return f"t{generation(epoch, i, self.every)[0]}_{i}" if self.inputs.per_generation else f"t_{i}"

    def missing(self, epoch: int) -> list[int]:
        """The videos whose entry for ``epoch`` is not in the cache (yet)."""
        assert self.cache is not None
        return [i for i in range(len(self)) if not self.cache.path(self.entry_name(epoch, i)).is_file()]

    def prebuild(self, epoch: int, i: int) -> None:
        """Decode and store the entry of example ``(epoch, i)`` (a bad video is left to ``__getitem__``)."""
        try:
            self._decoded(epoch, i, None, ahead=True)
        except DecodeError:
            pass

    def __getitem__(self, key: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
        epoch, i = key
        rng = keyed_rng(self.seed, epoch, i)
        try:
            clip = self.inputs.draw_clip(self.videos.meta(i), rng)
            decoded, k = self._decoded(epoch, i, clip)
            x = self.inputs.example(decoded, k, clip, rng)
        except DecodeError as err:
            log.warning("skipped a training video: %s", err)
            return None
        return x, self.videos.labels[i]


class EvalClips(Dataset):
    """Evaluation clips: the deterministic clips of every video, ``(i, (K, ...))``; cached in ``cache_dir``."""

    def __init__(self, videos: pd.DataFrame, labels: np.ndarray, inputs: ModalityInputs,
                 timeout_s: float = 60.0, cache_dir: str | Path | None = None) -> None:
        self.videos = _Videos(videos, labels, timeout_s)
        self.inputs = inputs
        self.cache = open_cache(cache_dir, inputs, self.videos.paths, "val")

    @property
    def labels(self) -> np.ndarray:
        return self.videos.labels

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray] | None:
        try:
            video = self.videos.meta(i)
            if self.cache is None:
                return i, self.inputs.eval_clips(video)
            return i, self.cache.get(f"v_{i}", lambda: {"clips": self.inputs.eval_clips(video)})["clips"]
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
