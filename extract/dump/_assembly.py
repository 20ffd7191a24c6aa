"""Row bookkeeping of a run: clips of many videos into model batches, features back into
rows, finished rows into chunk-aligned store writes.

::

    video a: K clips --+                         +--> row a: (K, D) --+
    video b: K clips --+--> batches of B clips --+--> row b: (K, D) --+--> one write_rows per
    video c: K clips --+    (videos split across  +--> row c ...      |    finished chunk
                             batch boundaries)                       +--> (or every flush_s)

:class:`RunLoop` drives it for every job of a run (:class:`~extract.dump.jobs.PlannedJob`):
one :class:`ClipBatcher` per job (its model's outputs side by side: features, then logits
with ``head_logits``), one :class:`ChunkedRowWriter` per feature set of the job.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import gc
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import psutil
import torch

from extract.dump.calibration import calibrate
from extract.dump.makers import ModelInput
from extract.dump.resources import MemoryBudget, ResourcePlan, WorkCosts, choose_plan
from extract.dump.worker import DecodePool, DecodeResult, DecodeTask, process_task, stop_fork_server
from extract.inputs import TRIM_COLUMNS
from store import FeatureSetSpec, FeatureStore, FeatureWriter
from store.malloc import release_free_memory
from store.threads import OtherLoad, available_cores, set_threads

if TYPE_CHECKING:
    from extract.dump.jobs import PlannedJob, RunPlan
    from extract.dump.settings import ExtractSettings

log = logging.getLogger(__name__)

#: Videos decoded in the main process and measured before the plan is made.
CALIBRATION_VIDEOS = 2


@dataclass
class _Row:
    data: np.ndarray  # (K, D) float32, filled as batches come back
    valid: np.ndarray  # (K,) bool
    times: np.ndarray  # (K, 2) float32
    inputs: int  # slots with model inputs (the first ones); the rest stay zeros
    filled: int = 0


@dataclass(frozen=True)
class Piece:
    """Clips ``k0:k1`` of ``row`` sit at ``offset:offset + (k1 - k0)`` of a batch."""

    row: int
    k0: int
    k1: int
    offset: int


class ClipBatcher:
    """Batches clips across videos (up to ``batch_size`` each) and reassembles rows.

    Args:
        batch_size: clips per model batch.
        dim: D, the feature size the model returns.
    """

    def __init__(self, batch_size: int, dim: int) -> None:
        self.batch_size, self.dim = batch_size, dim
        self._queue: collections.deque[tuple[int, np.ndarray, int]] = (
            collections.deque()
        )  # row, inputs, next k
        self._rows: dict[int, _Row] = {}
        self.pending_clips = 0

    def add(self, row: int, item: ModelInput) -> None:
        """Queue a video's inputs (its first ``len(item.inputs)`` slots; the rest stay zeros)."""
        k = len(item.valid)
        self._rows[row] = _Row(np.zeros((k, self.dim), np.float32), item.valid, item.times, len(item.inputs))
        self._queue.append((row, item.inputs, 0))
        self.pending_clips += len(item.inputs)

    def ready(self) -> bool:
        """A full batch is waiting."""
        return self.pending_clips >= self.batch_size

    def next_batch(self, limit: int | None = None) -> tuple[np.ndarray, list[Piece]] | None:
        """Up to ``limit`` (default ``batch_size``) clips, oldest videos first; None when nothing waits."""
        if not self._queue:
            return None
        limit = self.batch_size if limit is None else limit
        parts, pieces, size = [], [], 0
        while self._queue and size < limit:
            row, inputs, k0 = self._queue.popleft()
            k1 = min(len(inputs), k0 + limit - size)
            parts.append(inputs[k0:k1])
            pieces.append(Piece(row, k0, k1, size))
            size += k1 - k0
            if k1 < len(inputs):  # the rest of this video starts the next batch
                self._queue.appendleft((row, inputs, k1))
        self.pending_clips -= size
        return np.concatenate(parts), pieces  # parts of (k, ...) -> (B, ...)

    def put(
        self, pieces: list[Piece], feats: np.ndarray
    ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Scatter ``(B, D)`` features back; return the rows now complete as
        ``(row, data (K, D), valid (K,), times (K, 2))``."""
        finished = []
        for p in pieces:
            r = self._rows[p.row]
            r.data[p.k0 : p.k1] = feats[p.offset : p.offset + p.k1 - p.k0]
            r.filled += p.k1 - p.k0
            if r.filled == r.inputs:
                del self._rows[p.row]
                finished.append((p.row, r.data, r.valid, r.times))
        return finished


@dataclass
class ChunkedRowWriter:
    """Buffers finished rows and errors of one feature set; writes whole chunks at once.

    A chunk is written as soon as every row of it that this run plans to process is
    finished (one ``write_rows`` instead of one rewrite per row). Everything buffered is
    written when ``flush_s`` seconds passed since the last write, when more than
    ``max_rows`` rows wait, and at the end. ``done`` is set by the store only after the
    data is durable, so a crash loses at most the buffered rows.

    Args:
        writer: an open :class:`~store.FeatureWriter`.
        planned: rows this run will process in this feature set.
        chunk_rows: rows per storage chunk.
        flush_s: longest time finished rows wait.
        max_rows: most rows buffered before a flush.
    """

    writer: FeatureWriter
    planned: np.ndarray
    chunk_rows: int
    flush_s: float = 60.0
    max_rows: int = 1024
    rows_written: int = 0
    errors_written: int = 0
    writes: int = 0
    seconds: float = 0.0
    _left: collections.Counter = field(default_factory=collections.Counter)
    _ok: dict = field(default_factory=dict)
    _err: dict = field(default_factory=dict)
    _since: float | None = None  # when the buffer last went from empty to non-empty

    def __post_init__(self) -> None:
        self._left.update((np.asarray(self.planned, dtype=np.int64) // self.chunk_rows).tolist())

    def add(self, row: int, data: np.ndarray, valid: np.ndarray, times: np.ndarray) -> bool:
        """Buffer a finished row; True if that caused a write."""
        self._ok[row] = (data, valid, times)
        return self._finished(row)

    def add_error(self, row: int, message: str) -> bool:
        """Buffer a failed row's error text; True if that caused a write."""
        self._err[row] = message
        return self._finished(row)

    def _finished(self, row: int) -> bool:
        if self._since is None:
            self._since = time.monotonic()
        chunk = row // self.chunk_rows
        self._left[chunk] -= 1
        if self._left[chunk] == 0:
            self.flush(chunk)
            return True
        if self.buffered > self.max_rows or time.monotonic() - self._since > self.flush_s:
            self.flush()
            return True
        return False

    def flush(self, chunk: int | None = None) -> None:
        """Write the buffered rows of ``chunk`` (None: all of them)."""
        start = time.perf_counter()
        ok = sorted(r for r in self._ok if chunk is None or r // self.chunk_rows == chunk)
        err = sorted(r for r in self._err if chunk is None or r // self.chunk_rows == chunk)
        if ok:
            items = [self._ok.pop(r) for r in ok]
            self.writer.write_rows(
                np.asarray(ok),
                np.stack([i[0] for i in items]),
                valid=np.stack([i[1] for i in items]),
                times=np.stack([i[2] for i in items]),
            )
        if err:
            self.writer.write_errors(np.asarray(err), [self._err.pop(r) for r in err])
        self.rows_written += len(ok)
        self.errors_written += len(err)
        self.writes += bool(ok or err)
        if not self.buffered:
            self._since = None
        self.seconds += time.perf_counter() - start

    @property
    def buffered(self) -> int:
        return len(self._ok) + len(self._err)


class RunLoop:
    """The main-process side of a run: decode results in, batches through the models, rows out.

    Args:
        jobs: the run's jobs; job ``i`` fills its sets ``jobs[i].sets`` (its
            :attr:`~extract.dump.jobs.FeatureSetJob.outputs`, in order).
        writers: ``writers[i][j]`` writes set ``j`` of job ``i``.
        rows: the planned rows, sorted.
        batch_size: clips per model batch.
        stats: the run's live :class:`~extract.dump.pipeline.RunStats` (updated here).
        on_progress: called with ``stats`` after every video and every write.

    A row done in a set is never rewritten there. A slot layout with no valid slot (an audio
    set of a video without audio) never reaches the model: its row is written at once,
    zeros with an all-False mask.
    """

    def __init__(
        self,
        jobs: Sequence[PlannedJob],
        writers: Sequence[Sequence[ChunkedRowWriter]],
        rows: np.ndarray,
        batch_size: int,
        stats: Any,
        on_progress: Callable[[Any], None] | None = None,
    ) -> None:
        self.jobs, self.writers, self.rows = jobs, writers, rows
        self.lacking = [job.lacking(rows) for job in jobs]  # per job (n, sets): sets a row lacks
        self.dims = [job.job.dims for job in jobs]
        self.batchers = [ClipBatcher(batch_size, sum(d)) for d in self.dims]
        self.stats, self.on_progress = stats, on_progress

    def _needed(self, row: int, i: int) -> list[int]:
        """The sets of job ``i`` that still lack ``row``."""
        return np.flatnonzero(self.lacking[i][np.searchsorted(self.rows, row)]).tolist()

    def set_batch_size(self, batch_size: int) -> None:
        """Clips per model batch from now on (the plan's, once the first clips are measured)."""
        for b in self.batchers:
            b.batch_size = batch_size

    def take(self, res: DecodeResult) -> None:
        """Account for one decode result; run every batch it completes."""
        self.add(res)
        for i, b in enumerate(self.batchers):
            while b.ready():
                self._run_batch(i)
        self.sync_writes()

    def add(self, res: DecodeResult) -> None:
        """Account for one decode result and queue its clips (no batch runs)."""
        s = self.stats
        s.decode_calls += res.decode_calls
        s.probe_calls += res.probe_calls
        s.decode_seconds += res.seconds
        if res.error:
            s.videos_failed += 1
            s.failed_by_reason[res.reason] += 1
            for i in res.makers:
                for j in self._needed(res.row, i):
                    self.writers[i][j].add_error(res.row, res.error)
        else:
            s.videos_done += 1
            s.notes.update({item.note for item in res.inputs if item.note})
            for i, item, dt in zip(res.makers, res.inputs, res.make_seconds):
                s.make_seconds[i] += dt
                s.clips += len(item.inputs)
                if item.valid.any():
                    self.batchers[i].add(res.row, item)
                else:
                    self._finish(i, res.row, np.zeros((len(item.valid), sum(self.dims[i]))), item)

    def run_clips(self, i: int, n: int) -> int:
        """Run the next ``n`` queued clips of job ``i`` (or fewer, if fewer wait) as one batch,
        their features kept as any batch's; returns the clips run (the calibration's passes)."""
        return self._run_batch(i, n)

    def drain(self) -> None:
        """Run the last, partial batches."""
        for i, b in enumerate(self.batchers):
            while b.pending_clips:
                self._run_batch(i)

    def _run_batch(self, i: int, limit: int | None = None) -> int:
        batch = self.batchers[i].next_batch(limit)
        if batch is None:
            return 0
        inputs, pieces = batch
        t = time.perf_counter()
        outs = self.jobs[i].job.producer.embed_outputs(inputs)  # (B, ...) -> [(B, D_j), ...]
        self.stats.model_seconds += time.perf_counter() - t
        feats = np.concatenate(outs, axis=1) if len(outs) > 1 else outs[0]  # -> (B, sum D_j)
        for row, data, valid, times in self.batchers[i].put(pieces, feats):
            self._finish(i, row, data, ModelInput(data, valid, times))
        return len(inputs)

    def _finish(self, i: int, row: int, data: np.ndarray, item: ModelInput) -> None:
        """Split a finished row ``(K, sum D_j)`` into its sets and buffer the needed ones."""
        bounds = np.cumsum([0, *self.dims[i]])
        for j in self._needed(row, i):
            self.writers[i][j].add(row, data[:, bounds[j] : bounds[j + 1]], item.valid, item.times)

    def sync_writes(self) -> None:
        """Copy the writers' counters into the stats; report progress."""
        s = self.stats
        every = [w for job_writers in self.writers for w in job_writers]
        s.rows_written = sum(w.rows_written for w in every)
        s.errors_written = sum(w.errors_written for w in every)
        s.writes = sum(w.writes for w in every)
        s.write_seconds = sum(w.seconds for w in every)
        if self.on_progress:
            self.on_progress(s)


def _window(meta: pd.DataFrame, row: int) -> tuple[float, float] | None:
    start, end = (float(meta.at[row, c]) for c in TRIM_COLUMNS)
    return None if np.isnan(start) else (start, end)


#: Most bytes of finished float32 rows a set's writer buffers before it flushes (large K-max sets).
BUFFER_BYTES = 256 << 20


def buffer_rows(spec: FeatureSetSpec) -> int:
    """Rows a set's writer may buffer: 1024 (or two chunks), fewer when its ``(K, D)`` float32 rows
    would pass :data:`BUFFER_BYTES` (a time-based set with a large K-max), never under one chunk."""
    fit = BUFFER_BYTES // (spec.clips * spec.dim * 4)
    return max(spec.chunk_rows, min(max(1024, 2 * spec.chunk_rows), fit))


def extract_rows(
    fs: FeatureStore,
    paths: pd.Series,
    plan: RunPlan,
    settings: ExtractSettings,
    stats: Any,
    on_progress: Callable[[Any], None] | None,
) -> None:
    """The decode -> model -> write loop over the planned rows ``plan.todo`` (sorted).

    ``paths`` maps a store row to its video file. Every video is decoded once, for the jobs
    with at least one set that lacks it. The first :data:`CALIBRATION_VIDEOS` videos are
    decoded here and their first clips run through the models timed (:mod:`extract.dump.calibration`;
    the features are kept), while the other processes' CPU use is counted (the free cores:
    :class:`store.threads.OtherLoad`); the resource plan fitted to
    them (:func:`extract.dump.resources.choose_plan`) sets the decode processes, the threads,
    the batch size and the queue bound of the rest, is logged, kept in ``stats.plan`` and
    recorded in every filled set's attrs (``extraction``).
    """
    todo = plan.todo
    wants = np.stack([job.lacking(todo).any(axis=1) for job in plan.jobs], axis=1)  # (n, jobs)
    windowed = all(c in fs.columns for c in TRIM_COLUMNS)  # untrimmed files: clips from [start, end) only
    meta = fs.videos(["n_frames", "fps", *(TRIM_COLUMNS if windowed else ())],
                     rows=slice(int(todo[0]), int(todo[-1]) + 1))  # todo is sorted
    tasks = (
        DecodeTask(
            int(r),
            str(paths.loc[r]),
            int(meta.at[r, "n_frames"]),
            float(meta.at[r, "fps"]),
            tuple(np.flatnonzero(m).tolist()),
            window=_window(meta, r) if windowed else None,
        )
        for r, m in zip(todo, wants)
    )
    start = time.perf_counter()
    old_threads = torch.get_num_threads()
    makers = [job.job.maker for job in plan.jobs]
    try:
        with contextlib.ExitStack() as stack:
            writers = [
                [
                    ChunkedRowWriter(
                        stack.enter_context(s.fset.writer(plan.shard_rows)),
                        todo[np.isin(todo, s.pending)],
                        s.fset.chunk_rows,
                        flush_s=settings.flush_s,
                        max_rows=buffer_rows(s.fset.spec),
                    )
                    for s in job.sets
                ]
                for job in plan.jobs
            ]
            load = OtherLoad()  # the other processes' CPU, over the calibration
            measure = settings.threads or available_cores()
            set_threads(measure)  # torch, OpenMP and BLAS together
            loop = RunLoop(plan.jobs, writers, todo, settings.batch_size, stats, on_progress)
            try:
                first = [process_task(t, makers, settings.timeout_s)
                         for t in itertools.islice(tasks, CALIBRATION_VIDEOS)]
                for res in first:
                    loop.add(res)
                costs = calibrate(first, [job.job.producer for job in plan.jobs], measure, loop.run_clips,
                                  load.busy_cores, one_thread=settings.threads is None)
                cores = load.free_cores()
                gc.collect()  # the budget counts what the process holds, not what it freed (a training before
                release_free_memory()  # it in the same process, a long test session)
                budget = MemoryBudget(int(settings.max_memory_gb * 2**30), psutil.Process().memory_info().rss)
                chosen = choose_plan(costs, cores, budget, max_batch=settings.batch_size, device=stats.device,
                                     workers=settings.workers, threads=settings.threads)
                _record_plan(plan, chosen, costs, settings, stats)
                if chosen.workers == 0 and stop_fork_server():  # the header probes' server: ~0.4 GB unused
                    log.info("stopped the decode processes' fork server (decoding in this process)")
                set_threads(chosen.threads)
                loop.set_batch_size(chosen.batch_size)
                pool = stack.enter_context(
                    DecodePool(makers, chosen.workers, timeout_s=settings.timeout_s, max_ahead=chosen.max_ahead)
                )
                for res in pool.imap_unordered(tasks):
                    loop.take(res)
                loop.drain()
            finally:  # also on Ctrl-C: what is finished gets written
                for job_writers in writers:
                    for w in job_writers:
                        w.flush()
                loop.sync_writes()
    finally:
        set_threads(old_threads)
        stats.seconds = time.perf_counter() - start


def _record_plan(plan: RunPlan, chosen: ResourcePlan, costs: WorkCosts | None, settings: ExtractSettings,
                 stats: Any) -> None:
    """Log the plan, keep it in the stats and in the attrs of every set the run fills."""
    log.info(chosen.describe())
    if not chosen.fits:
        log.warning("--max-memory %g GB is below what one clip per batch needs (~%.2f GB); running anyway",
                    settings.max_memory_gb, chosen.peak_bytes / 2**30)
    stats.workers, stats.threads, stats.batch_size = chosen.workers, chosen.threads, chosen.batch_size
    record = {
        "plan": chosen.to_dict(),
        "costs": costs.to_dict() if costs is not None else None,
        "max_memory_gb": settings.max_memory_gb,
        "recorded": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    stats.plan = record
    for job in plan.jobs:
        for s in job.sets:
            s.fset.group.attrs["extraction"] = record
