"""Where a head's batches come from: features held in RAM, or the store's chunk reader.

Two sources give the same batches (``features`` (B, K, D) float32, ``mask`` (B, K) bool,
``labels`` (B, C) float32, ``rows`` (B,) int64) and differ only in where the features live:

- :class:`FeatureCache` / :class:`MemorySource`: every row done in all the feature sets, read
  once with a whole-array scan and kept in the storage dtype (float16: 8 x 512 x 2 = 8 KiB a
  video). A cache is a plain picklable object, so a sweep loads it once and hands it to many
  trainings (``train_head(..., data=cache)``) or scatters it to Dask workers.
- :class:`StreamSource`: :class:`store.readers.ChunkShuffleDataset`, which reads whole storage
  chunks in a shuffled order (for stores larger than RAM).

The order of the batches is a pure function of ``(seed, epoch)`` for both, so a resumed run
sees the same batches as an uninterrupted one. A background thread (:func:`heads.prefetch.prefetched`)
assembles the next batches while the model computes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from store.errors import ShapeMismatch, VideoFeatError
from store.feature_store import FeatureStore
from store.readers import ChunkShuffleDataset

if TYPE_CHECKING:
    from heads.trainer import TrainConfig

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
# "auto" keeps the features in RAM when they take less than this of the available RAM. Not more:
# MemAvailable counts the page cache, which after any read of the store holds those same bytes
# again, and training streams whole chunks nearly as fast as it computes on a CPU (1M x 8 x 256
# float16 = 4.1 GB took 5.5 GB of RSS in RAM on a 24 GB machine with 22 GB "available").
MEMORY_FRACTION = 0.125


class TrainError(VideoFeatError):
    """A user-caused problem with the training data (empty split, no labels, bad cache)."""


def n_batches(n_rows: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches an epoch over ``n_rows`` rows yields."""
    return n_rows // batch_size if drop_last else -(-n_rows // batch_size)


def check_feature_sets(store: FeatureStore, features: Sequence[str]) -> tuple[int, int]:
    """``(K, sum of D)`` of the feature sets to concatenate per clip; errors if K differs."""
    sets = [store.feature_set(name) for name in features]  # FeatureSetNotFound if unknown
    ks = {s.name: s.spec.clips for s in sets}
    if len(set(ks.values())) != 1:
        raise ShapeMismatch(
            "feature sets concatenated per clip need the same number of clips K; got "
            + ", ".join(f"{n}: K={k}" for n, k in ks.items())
            + " (train one head per set and fuse their predictions instead)"
        )
    return sets[0].spec.clips, sum(s.spec.dim for s in sets)


def estimate_bytes(store: FeatureStore, features: Sequence[str]) -> int:
    """Bytes a :class:`FeatureCache` of these feature sets takes (all rows, storage dtype)."""
    sets = [store.feature_set(name) for name in features]
    return sum(store.n_videos * s.spec.clips * s.spec.dim * np.dtype(s.spec.dtype).itemsize for s in sets)


def available_memory() -> int:
    """Bytes of RAM available to new allocations (``MemAvailable`` on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _batch(rows: np.ndarray, feats: np.ndarray, mask: np.ndarray, labels: np.ndarray) -> Batch:
    return {"features": torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)),
            "mask": torch.from_numpy(np.ascontiguousarray(mask)),
            "labels": torch.from_numpy(labels.astype(np.float32)),
            "rows": torch.from_numpy(rows.astype(np.int64))}


@dataclass(frozen=True, eq=False)
class FeatureCache:
    """Features of the rows done in every one of ``features``, in RAM.

    Attributes:
        path: Store the features were read from.
        features: Feature set names, in concatenation order.
        n_videos: Rows of the store when read (a cache of a store that grew is stale).
        rows: ``(n,)`` sorted store rows held.
        data: ``(n, K, D)`` features in the storage dtype, sets concatenated along D.
        mask: ``(n, K)`` bool, valid in every set.
        labels: ``(n, C)`` uint8.
    """

    path: Path
    features: tuple[str, ...]
    n_videos: int
    rows: np.ndarray
    data: np.ndarray
    mask: np.ndarray
    labels: np.ndarray

    @classmethod
    def load(cls, store: FeatureStore | str | Path, features: Sequence[str]) -> FeatureCache:
        """Read every done row of ``features`` (one whole-array scan per set)."""
        fs = store if isinstance(store, FeatureStore) else FeatureStore.open(store, "r")
        features = tuple(features)
        check_feature_sets(fs, features)
        sets = [fs.feature_set(name) for name in features]
        done = np.logical_and.reduce([s.done() for s in sets])
        rows = np.flatnonzero(done)
        parts, mask = [], np.ones((len(rows), sets[0].spec.clips), dtype=bool)
        for s in sets:
            data, valid = s.read(rows, dtype=None)
            parts.append(data)
            mask &= valid
        data = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=2)  # (n, K, sum D)
        log.info("cached %d rows of %s (%.0f MB)", len(rows), "+".join(features), data.nbytes / 1e6)
        return cls(fs.path, features, fs.n_videos, rows, data, mask, fs.labels(rows))

    def check_matches(self, store: FeatureStore, features: Sequence[str]) -> None:
        """Raise TrainError unless this cache holds ``features`` of ``store`` as it is now."""
        if tuple(features) != self.features:
            raise TrainError(f"the cache holds feature sets {list(self.features)}, the config asks for "
                             f"{list(features)}; load a FeatureCache of the config's features")
        if Path(store.path).resolve() != Path(self.path).resolve() or store.n_videos != self.n_videos:
            raise TrainError(f"the cache was read from {self.path} with {self.n_videos} videos, not from "
                             f"{store.path} with {store.n_videos}; reload it with FeatureCache.load")

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """Index into the cache's arrays of each of ``rows`` (which must be held)."""
        pos = np.searchsorted(self.rows, rows)
        if len(rows) and (pos.max() >= len(self.rows) or not np.array_equal(self.rows[pos], rows)):
            raise TrainError("asked the cache for rows it does not hold (rows not done in every feature set)")
        return pos


class MemorySource:
    """Batches cut from a :class:`FeatureCache`."""

    mode = "memory"

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache
        self.rows = cache.rows
        self.clips, self.dim = cache.data.shape[1], cache.data.shape[2]

    def labels(self, rows: np.ndarray) -> np.ndarray:
        return self.cache.labels[self.cache.positions(rows)]

    def batches(self, rows: np.ndarray, *, batch_size: int, shuffle: bool, seed: int, epoch: int,
                drop_last: bool) -> Iterator[Batch]:
        c = self.cache
        pos = c.positions(np.asarray(rows, dtype=np.int64))
        if shuffle:
            pos = pos[np.random.default_rng([seed, epoch]).permutation(len(pos))]
        for b in range(0, n_batches(len(pos), batch_size, drop_last) * batch_size, batch_size):
            i = pos[b:b + batch_size]
            yield _batch(c.rows[i], c.data[i], c.mask[i], c.labels[i])


class StreamSource:
    """Batches streamed from the store by :class:`ChunkShuffleDataset` (whole-chunk reads)."""

    mode = "stream"

    def __init__(self, store: FeatureStore, features: Sequence[str], *, buffer_chunks: int = 8) -> None:
        self.store, self.features, self.buffer_chunks = store, list(features), buffer_chunks
        self.clips, self.dim = check_feature_sets(store, features)
        sets = [store.feature_set(name) for name in features]
        self.rows = np.flatnonzero(np.logical_and.reduce([s.done() for s in sets]))
        self._datasets: dict[tuple, ChunkShuffleDataset] = {}

    def labels(self, rows: np.ndarray) -> np.ndarray:
        return self.store.labels(rows)

    def batches(self, rows: np.ndarray, *, batch_size: int, shuffle: bool, seed: int, epoch: int,
                drop_last: bool) -> Iterator[Batch]:
        rows = np.asarray(rows, dtype=np.int64)
        key = (hashlib.sha1(rows.tobytes()).hexdigest(), batch_size, shuffle, seed, drop_last)
        ds = self._datasets.get(key)
        if ds is None:  # one reader per row set: its masks and labels are read once, not every epoch
            ds = ChunkShuffleDataset(self.store, self.features, rows=rows, batch_size=batch_size, shuffle=shuffle,
                                     buffer_chunks=self.buffer_chunks, seed=seed, drop_last=drop_last)
            if len(self._datasets) >= 8:
                self._datasets.pop(next(iter(self._datasets)))
            self._datasets[key] = ds
        ds.set_epoch(epoch)
        return iter(ds)


Source = MemorySource | StreamSource


def make_source(store: FeatureStore, config: TrainConfig, data: FeatureCache | None = None) -> Source:
    """RAM or streaming source for ``config.features`` (``data``, when given, wins)."""
    check_feature_sets(store, config.features)
    if data is not None:
        data.check_matches(store, config.features)
        return MemorySource(data)
    reader = config.reader
    if reader == "auto":
        need, free = estimate_bytes(store, config.features), available_memory()
        reader = "memory" if need < MEMORY_FRACTION * free else "stream"
        log.info("features take %.0f MB, %.0f MB RAM free: reading %s", need / 1e6, free / 1e6,
                 "into RAM" if reader == "memory" else "by streaming chunks")
    if reader == "memory":
        return MemorySource(FeatureCache.load(store, config.features))
    return StreamSource(store, config.features)
