"""Filling the clip cache ahead of the model: the next epoch's decodes run while this epoch trains.

With a clip cache, an example is a file read and a crop (~0.06 ms): cheaper in the training
process itself (a background thread, ``extract.training.loop``) than a trip through a DataLoader
worker (inter-process hand-over and scheduling cost more than the read on a busy 2-core machine).
What does cost is decoding the videos whose generation starts (about 1 / ``decode_every`` of them
per epoch): :class:`Prebuilder` hands those to a pool of ``workers`` processes one epoch ahead::

    epoch e starts:  submit(e)      entries still missing for e (the first epoch, a resume), reversed
                     submit(e + 1)  the generations that start at e + 1
    the loop's prefetch thread reads epoch e's examples in this process; an entry not built yet is
    built there (the loop waits for it only when the thread falls behind)

The pool only writes cache entries (atomically, :mod:`extract.training.clip_cache`); the batches
are the ones ``TrainClips`` gives with or without it. Closing the pool kills a build mid-write
at worst, which leaves a ``*.tmp`` file that the next opening removes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from typing import Any

from extract.training.data import EpochSampler, TrainClips, _worker_init

log = logging.getLogger(__name__)

_DATASET: TrainClips | None = None  # the dataset of a pool process


def _init(dataset: TrainClips, seed: int) -> None:
    global _DATASET
    _worker_init(os.getpid(), seed)
    _DATASET = dataset


def _build(key: tuple[int, int]) -> None:
    assert _DATASET is not None
    _DATASET.prebuild(*key)


class Prebuilder:
    """Background decoding of a cached :class:`TrainClips`' upcoming entries.

    Args:
        dataset: the training examples (with a cache).
        workers: decode processes (>= 1).
        last_epoch: the last epoch that will be read (the run's epochs and the SWA pass).
    """

    def __init__(self, dataset: TrainClips, workers: int, last_epoch: int) -> None:
        assert dataset.cache is not None and workers >= 1
        self.dataset, self.last_epoch = dataset, last_epoch
        self.submitted: set[int] = set()
        self.pool: Any = mp.get_context("fork").Pool(workers, initializer=_init, initargs=(dataset, dataset.seed))

    def submit(self, epoch: int) -> int:
        """Queue the missing entries of ``epoch`` (once per epoch); how many were queued."""
        if epoch in self.submitted or epoch > self.last_epoch:
            return 0
        self.submitted.add(epoch)
        keys = [(epoch, i) for i in self.dataset.missing(epoch)]
        # the loop reads in the epoch's order from the front; the pool starts from the back
        sampler = EpochSampler(len(self.dataset), self.dataset.seed)
        sampler.set_epoch(epoch)
        rank = {i: r for r, (_, i) in enumerate(sampler)}
        keys.sort(key=lambda k: -rank[k[1]])
        if keys:
            self.pool.map_async(_build, keys, chunksize=1, error_callback=self._failed)
        return len(keys)

    @staticmethod
    def _failed(err: BaseException) -> None:
        log.warning("a background decode failed (the loop decodes that video itself): %s", err)

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()
