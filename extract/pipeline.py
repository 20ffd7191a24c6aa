"""The feature dump as a library: video list -> store rows -> decode workers -> model -> writes.

::

    open_video_list(source, store)          the list, with the store's classes when it has some
    prepare_store(path, videos)             create or extend the store (headers probed in workers;
                                            both live in extract._prepare)
    build_producers(settings, device)       one FeatureProducer per feature set (RGB today)
    extract(source, store, settings)        all of the above and run_extraction, in one call
    run_extraction(fs, targets, producers, settings)
        pending rows (not done, in the shard) -> DecodeTask per video
        DecodePool (processes)  --results-->  ClipBatcher (clips across videos, <= batch_size)
        model in this process   --features--> ChunkedRowWriter (chunk-aligned write_rows)

Each video is opened and decoded once for every producer that still needs it. A video
that cannot be decoded gets an error row (``write_errors``) and the run goes on. Resuming
is rerunning: only ``pending()`` rows are processed. ``ExtractSettings.shard = (i, n)``
restricts a run to the i-th of n chunk-aligned row ranges, so n processes (machines, Dask
workers) can fill one store side by side.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from extract._assembly import ChunkedRowWriter, ClipBatcher
from extract._prepare import (
    UNLABELLED_CLASSES,
    check_feature_sets,
    open_video_list,
    prepare_store,
    probe_table,
)
from extract._worker import DecodePool, DecodeResult, DecodeTask
from extract.backbones import get_backbone
from extract.errors import ExtractError
from extract.producers import FeatureProducer, RGBClips, RGBProducer
from extract.settings import ExtractSettings
from store import FeatureSetSpec, FeatureStore

__all__ = [
    "UNLABELLED_CLASSES",
    "RunStats",
    "build_producers",
    "check_feature_sets",
    "default_set_name",
    "extract",
    "open_video_list",
    "prepare_store",
    "probe_table",
    "run_extraction",
]

log = logging.getLogger(__name__)

Progress = Callable[["RunStats"], None]


# ---------------------------------------------------------------------------- producers
def build_producers(settings: ExtractSettings, device: str) -> list[FeatureProducer]:
    """The producers a run fills (today: one RGB producer for ``settings.backbone``).

    The backbone is built under ``torch.manual_seed(settings.seed)`` so a random init is the
    same in every shard and every resume.
    """
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            backbone = get_backbone(settings.backbone, weights=settings.weights)
        info = backbone.info
        maker = RGBClips(settings.clip_sampling(info), settings.view_spec(info))
    except ValueError as err:  # unknown backbone, clips or views that do not fit it
        if isinstance(err, ExtractError):
            raise
        raise ExtractError(str(err)) from None
    return [
        RGBProducer(
            backbone,
            maker,
            device=device,
            amp=settings.use_amp(device),
            seed=settings.seed,
            chunk_rows=settings.chunk_rows,
        )
    ]


def default_set_name(producer: FeatureProducer) -> str:
    """``<modality>_<backbone>``, e.g. ``rgb_resnet18``."""
    return f"{producer.spec.modality}_{producer.spec.backbone}"


# ---------------------------------------------------------------------------- the run
def extract(
    source: str | os.PathLike,
    store: str | os.PathLike,
    settings: ExtractSettings,
    *,
    root: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    on_probe: Callable[[int, int], None] | None = None,
    on_progress: Progress | None = None,
) -> RunStats:
    """The whole dump in one call (what ``python -m extract.run`` does, minus the demo and
    the printing): read the list, check the feature sets, prepare the store, build the
    producers, extract. With ``settings.shard = (i, n)`` it is one of n shard jobs, e.g. one
    Dask task per shard: ``client.map(lambda i: extract(csv, store, replace(s, shard=(i, n))), range(n))``.
    """
    device = settings.resolved_device()
    videos = open_video_list(source, store=store, root=root, classes=classes)
    producers = build_producers(settings, device)
    set_names = [settings.set_name or default_set_name(p) for p in producers]
    check_feature_sets(store, producers, set_names)
    workers, _ = settings.parallelism(device)
    fs, targets = prepare_store(
        store, videos, workers=workers, timeout_s=settings.timeout_s, progress=on_probe
    )
    return run_extraction(
        fs,
        targets,
        producers,
        settings,
        set_names=set_names,
        device=device,
        on_progress=on_progress,
    )


@dataclass
class RunStats:
    """Counters of one run (live during it, final in the summary).

    ``decode_calls / videos_decoded`` is the number of decodes per video (1: every clip,
    view and feature set comes from one open); ``probe_calls`` counts header-only opens.
    """

    planned: int = 0
    videos_done: int = 0
    videos_failed: int = 0
    clips: int = 0
    failed_by_reason: collections.Counter = field(default_factory=collections.Counter)
    skipped_done: int = 0
    skipped_failed_before: int = 0
    outside_shard: int = 0
    decode_calls: int = 0
    probe_calls: int = 0
    rows_written: int = 0
    errors_written: int = 0
    writes: int = 0
    decode_seconds: float = 0.0
    model_seconds: float = 0.0
    write_seconds: float = 0.0
    seconds: float = 0.0
    workers: int = 0
    threads: int = 0
    device: str = "cpu"
    store: str = ""
    set_names: list[str] = field(default_factory=list)
    specs: list[FeatureSetSpec] = field(default_factory=list)

    @property
    def decodes_per_video(self) -> float:
        n = self.videos_done + self.videos_failed
        return self.decode_calls / n if n else 0.0


def run_extraction(
    fs: FeatureStore,
    targets: pd.DataFrame,
    producers: Sequence[FeatureProducer],
    settings: ExtractSettings,
    *,
    set_names: Sequence[str] | None = None,
    device: str = "cpu",
    on_progress: Progress | None = None,
) -> RunStats:
    """Extract the pending rows of ``targets`` into one feature set per producer.

    Args:
        fs: a store opened writable.
        targets: rows to consider (index) and their ``path``; see :func:`prepare_store`.
        producers: from :func:`build_producers`.
        settings: run settings (batch size, workers, threads, shard, limit, ...).
        set_names: feature set names (default: ``settings.set_name``, else
            :func:`default_set_name`).
        device: ``"cpu"`` or ``"cuda"`` (where the producers' models are).
        on_progress: called with the live stats after every video and every write.

    Raises:
        FeatureSetExists: a set of that name was made with other settings.
        StoreLocked: another writer holds the feature set (or an overlapping shard).
    """
    if set_names is None:
        set_names = [settings.set_name or default_set_name(p) for p in producers]
    stats = RunStats(
        device=device,
        store=str(fs.path),
        set_names=list(set_names),
        specs=[p.spec for p in producers],
    )
    stats.workers, stats.threads = settings.parallelism(device)
    fsets = [fs.create_feature_set(name, p.spec) for name, p in zip(set_names, producers)]
    rows = np.sort(targets.index.to_numpy(dtype=np.int64))
    shard_rows = None
    if settings.shard is not None:
        shard_rows = fs.shard_range(*settings.shard, chunk_rows=fsets[0].chunk_rows)
        inside = (rows >= shard_rows[0]) & (rows < shard_rows[1])
        stats.outside_shard = int((~inside).sum())
        rows = rows[inside]
    pending = [f.pending(rows, retry_errors=settings.retry_errors) for f in fsets]
    todo = np.unique(np.concatenate(pending)) if pending else np.zeros(0, np.int64)
    done_any = np.zeros(fs.n_videos, bool)
    for f in fsets:
        done_any |= f.done()
    stats.skipped_done = int(done_any[rows].sum()) if len(rows) else 0
    stats.skipped_failed_before = len(rows) - stats.skipped_done - len(todo)
    if settings.limit is not None:
        todo = todo[: settings.limit]
    stats.planned = len(todo)
    if not len(todo):
        return stats
    need = np.stack(
        [np.isin(todo, p) for p in pending], axis=1
    )  # (n, sets): which sets a row still lacks
    meta = fs.videos(["n_frames", "fps"])
    paths = targets["path"]
    tasks = (
        DecodeTask(
            int(r),
            str(paths.loc[r]),
            int(meta.at[r, "n_frames"]),
            float(meta.at[r, "fps"]),
            tuple(np.flatnonzero(m).tolist()),
        )
        for r, m in zip(todo, need)
    )
    start = time.perf_counter()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(stats.threads)
    try:
        with contextlib.ExitStack() as stack:
            writers = [
                ChunkedRowWriter(
                    stack.enter_context(f.writer(shard_rows)),
                    todo[need[:, i]],
                    f.chunk_rows,
                    flush_s=settings.flush_s,
                    max_rows=max(1024, 2 * f.chunk_rows),
                )
                for i, f in enumerate(fsets)
            ]
            batchers = [ClipBatcher(settings.batch_size, p.spec.dim) for p in producers]
            ahead = max(8, 2 * settings.batch_size // min(p.spec.clips for p in producers))
            pool = stack.enter_context(
                DecodePool(
                    [p.maker for p in producers],
                    stats.workers,
                    timeout_s=settings.timeout_s,
                    max_ahead=ahead,
                )
            )
            loop = _Loop(producers, batchers, writers, stats, on_progress)
            try:
                for res in pool.imap_unordered(tasks):
                    loop.take(res)
                loop.drain()
            finally:  # also on Ctrl-C: what is finished gets written
                for w in writers:
                    w.flush()
                loop.sync_writes()
    finally:
        torch.set_num_threads(old_threads)
        stats.seconds = time.perf_counter() - start
    return stats


class _Loop:
    """The main-process side of the run: results in, batches through the models, rows out."""

    def __init__(
        self, producers, batchers, writers, stats: RunStats, on_progress: Progress | None
    ) -> None:
        self.producers, self.batchers, self.writers = producers, batchers, writers
        self.stats, self.on_progress = stats, on_progress

    def take(self, res: DecodeResult) -> None:
        s = self.stats
        s.decode_calls += res.decode_calls
        s.probe_calls += res.probe_calls
        s.decode_seconds += res.seconds
        if res.error:
            s.videos_failed += 1
            s.failed_by_reason[res.reason] += 1
            for i in res.makers:
                self.writers[i].add_error(res.row, res.error)
        else:
            s.videos_done += 1
            for i, item in zip(res.makers, res.inputs):
                self.batchers[i].add(res.row, item)
                s.clips += len(item.inputs)
        for i, b in enumerate(self.batchers):
            while b.ready():
                self._run_batch(i)
        self.sync_writes()

    def drain(self) -> None:
        for i, b in enumerate(self.batchers):
            while b.pending_clips:
                self._run_batch(i)

    def _run_batch(self, i: int) -> None:
        inputs, pieces = self.batchers[i].next_batch()
        t = time.perf_counter()
        feats = self.producers[i].embed(inputs)  # (B, ...) -> (B, D)
        self.stats.model_seconds += time.perf_counter() - t
        for row, data, valid, times in self.batchers[i].put(pieces, feats):
            self.writers[i].add(row, data, valid, times)

    def sync_writes(self) -> None:
        s = self.stats
        s.rows_written = sum(w.rows_written for w in self.writers)
        s.errors_written = sum(w.errors_written for w in self.writers)
        s.writes = sum(w.writes for w in self.writers)
        s.write_seconds = sum(w.seconds for w in self.writers)
        if self.on_progress:
            self.on_progress(s)
