"""``extract.run`` on a Dask cluster: chunk-aligned row ranges as tasks; no row lost when a worker dies.

::

    client (extract.run --cluster / --scheduler)               workers (store/cluster.py starts them)
    read the list, add the rows to the store (headers probed)
    create the feature sets (specs checked once, here)
    pending rows -> chunk-aligned ranges ---- submit ------>  extract_range(store, settings, names, a, b)
                                                               producers built once per worker process
                                                               run_extraction(row_range=(a, b)): decode,
                                                               embed, write with the crash-safe range writer
    as_completed: rows, rows/s, per worker  <--- RangeResult   (done only after the data is durable)
    a range whose worker died twice -> its pending rows one at a time, in order;
    a row whose worker died twice -> an error row in every set ("killed its Dask worker twice")

* **No two tasks write one chunk**: a task's range is whole storage chunks, and its writers
  lock exactly that range (``FeatureSet.writer(rows=(a, b))``: flock, or lease files on
  shared filesystems, store/_lease.py).
* **Resuming is rerunning**: the client plans only rows not done in some set; a task does
  only the pending rows of its range. A worker killed mid-task loses nothing that was marked
  done; Dask runs the task again on another worker (``allowed-failures = 1``) and it goes on
  from there. Killed twice, the range is retried one row at a time so that the one video that
  kills workers is found and recorded as a per-row error, not retried for ever.
* **GPU tasks** carry the Dask resource ``GPU=1`` (``--device cuda``, ``--cluster cuda``, or a
  Slurm gres of GPUs), so a CPU-only worker never takes them.
* The client dying (or the scheduler) leaves a valid store (``store.verify`` passes: every
  write is crash-safe); the same command completes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from extract.dump.pipeline import build_producers, prepare_run, run_extraction, write_logit_predictions
from extract.dump.producers import LOGITS_SUFFIX
from extract.dump.settings import ExtractSettings
from extract.errors import ExtractError
from store import FeatureStore
from store.cluster import gpu_resources
from store.errors import StoreLocked

log = logging.getLogger(__name__)

KILLED = "killed its Dask worker twice (a crash in decoding or in the model)"
LOCK_WAIT_S = 90.0  # a range lock of a dead worker on another node is stale after 60 s (store/_lease.py)


@dataclass(frozen=True)
class RangeResult:
    """What one task did: rows ``[start, stop)`` of the store."""

    start: int
    stop: int
    done: int
    failed: int
    clips: int
    seconds: float
    worker: str


@dataclass
class ClusterStats:
    """Counters of a cluster run (live during it from the tasks' results; ``done``/``failed`` final from the store)."""

    planned: int = 0
    tasks: int = 0
    done: int = 0
    failed: int = 0
    clips: int = 0
    isolated_ranges: int = 0
    killed_rows: list[int] = field(default_factory=list)
    per_worker: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    set_names: list[str] = field(default_factory=list)
    store: str = ""
    predictions: dict[str, dict] = field(default_factory=dict)


_PRODUCERS: dict[str, tuple[list, str]] = {}  # per worker process: the models of the current run


def _producers(settings: ExtractSettings, num_classes: int) -> tuple[list, str]:
    """The run's producers, built once per worker process (a new run's settings replace them)."""
    key = json.dumps(settings.to_dict(), sort_keys=True, default=str) + f"|{num_classes}"
    if key not in _PRODUCERS:
        _PRODUCERS.clear()
        device = settings.resolved_device()
        _PRODUCERS[key] = (build_producers(settings, device, num_classes=num_classes), device)
    return _PRODUCERS[key]


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except ValueError:  # not inside a Dask worker (a direct call)
        return f"pid {os.getpid()}"


def extract_range(store: str, settings: ExtractSettings, set_names: Sequence[str], num_classes: int,
                  start: int, stop: int, rows: Sequence[int] | None = None) -> RangeResult:
    """One task: extract the pending rows of ``[start, stop)`` (or only ``rows`` of it) into every set.

    Runs in a Dask worker; waits up to :data:`LOCK_WAIT_S` for the range lock of a worker
    that died on another node to go stale.
    """
    t0 = time.perf_counter()
    fs = FeatureStore.open(store, "a")
    producers, device = _producers(settings, num_classes)
    targets = fs.videos(["path"], rows=slice(start, stop))
    if rows is not None:
        targets = targets.loc[list(rows)]
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            stats = run_extraction(fs, targets, producers, settings, set_names=list(set_names), device=device,
                                   row_range=(start, stop), logit_runs=False)
            break
        except StoreLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)
    return RangeResult(start, stop, stats.videos_done, stats.videos_failed, stats.clips,
                       time.perf_counter() - t0, _worker_name())


def task_ranges(pending: np.ndarray, n_rows: int, chunk_rows: int, chunks_per_task: int = 1) -> list[tuple[int, int]]:
    """Chunk-aligned ``(start, stop)`` ranges of ``chunks_per_task`` chunks holding pending rows."""
    size = chunk_rows * chunks_per_task
    firsts = np.unique(np.asarray(pending, dtype=np.int64) // size)
    return [(int(f * size), int(min((f + 1) * size, n_rows))) for f in firsts]


def _pending_rows(fs: FeatureStore, names: Sequence[str], retry_errors: bool) -> np.ndarray:
    rows = [fs.feature_set(n).pending(retry_errors=retry_errors) for n in names]
    return np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


def _record_killed(fs: FeatureStore, names: Sequence[str], row: int, chunk_rows: int, n_rows: int) -> None:
    """Write the error of a row that killed its worker twice into every set that lacks it."""
    start = row // chunk_rows * chunk_rows
    for name in names:
        fset = fs.feature_set(name)
        if not fset.done()[row]:
            with fset.writer(rows=(start, min(start + chunk_rows, n_rows))) as w:
                w.write_errors([row], [KILLED])


def extract_on_cluster(
    client: Any,
    source: str | os.PathLike,
    store: str | os.PathLike,
    settings: ExtractSettings,
    *,
    root: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
    list_format: str = "auto",
    kinetics_pattern: str | None = None,
    gpu: bool = False,
    chunks_per_task: int = 1,
    on_probe: Callable[[int, int], None] | None = None,
    on_progress: Callable[[ClusterStats], None] | None = None,
    task: Callable[..., RangeResult] = extract_range,
) -> ClusterStats:
    """The whole dump on a Dask cluster (see the module docstring).

    Args:
        client: a ``distributed.Client`` (``store.cluster.connect``).
        source, store, settings, root, classes, list_format, kinetics_pattern: as for
            :func:`extract.dump.pipeline.extract`.
        gpu: tag the tasks with the Dask resource ``GPU=1``.
        chunks_per_task: storage chunks per task (256 rows each by default).
        on_probe: header probing progress ``(done, total)``.
        on_progress: called with the live stats after every finished task.
        task: the per-range work (tests wrap :func:`extract_range` to kill workers on purpose).
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    t0 = time.perf_counter()
    if settings.amp and settings.resolved_device() != "cuda":
        raise ExtractError("--amp on a cluster needs this client on a GPU node too (the feature sets record the "
                           "precision the models run at); run the command on a GPU node or drop --amp")
    # The client builds the models once, on its own device, for the sets' names and specs; a client
    # without a GPU (a login node) may still run --device cuda tasks on GPU workers.
    device = "cpu" if settings.device == "cuda" and not torch.cuda.is_available() else settings.resolved_device()
    run = prepare_run(source, store, settings, device=device, workers=max(1, settings.workers or 1), root=root,
                      classes=classes, list_format=list_format, kinetics_pattern=kinetics_pattern, on_probe=on_probe)
    fs, targets, num_classes = run.fs, run.targets, run.num_classes
    settings = run.settings  # time-based K-max fixed here, the same for every task
    outputs = [out for job in run.jobs for out in job.outputs]
    for name, spec in outputs:
        fs.create_feature_set(name, spec)
    names = [job.name for job in run.jobs]
    logit_sets = [job.name for job in run.jobs if job.head_logits]
    del run  # the jobs hold the models: the client needs none from here on
    pending = _pending_rows(fs, [name for name, _ in outputs], settings.retry_errors)
    pending = pending[np.isin(pending, targets.index.to_numpy())]
    if settings.limit is not None:
        pending = pending[: settings.limit]
    stats = ClusterStats(planned=len(pending), set_names=[n for n, _ in outputs], store=str(fs.path))
    ranges = task_ranges(pending, fs.n_videos, settings.chunk_rows, chunks_per_task)
    stats.tasks = len(ranges)
    task_settings = dataclasses.replace(settings, limit=None, shard=None)
    resources = gpu_resources(client) if gpu else None

    def submit(a: int, b: int, rows: list[int]) -> Any:
        return client.submit(task, str(fs.path), task_settings, names, num_classes, a, b, rows,
                             resources=resources, pure=False, key=f"extract-{a}-{b}-{os.urandom(4).hex()}")

    futures = {}
    for a, b in ranges:
        rows = pending[(pending >= a) & (pending < b)].tolist()  # only this run's rows (a store may hold others)
        futures[submit(a, b, rows)] = (a, b, set(rows))
    killed: list[tuple[int, int, set]] = []
    for future in as_completed(list(futures)):
        a, b, ok = futures.pop(future)
        try:
            _add(stats, future.result())
        except KilledWorker:
            killed.append((a, b, ok))
        if on_progress:
            on_progress(stats)
    for a, b, ok in killed:  # one row at a time, to find the video that kills its worker
        stats.isolated_ranges += 1
        for row in sorted(set(_pending_rows(fs, stats.set_names, settings.retry_errors).tolist()) & ok):
            try:
                _add(stats, submit(a, b, [row]).result())
            except KilledWorker:
                log.warning("row %d (%s) killed its Dask worker twice; recorded as an error", row,
                            targets["path"].get(row, "?"))
                _record_killed(fs, stats.set_names, row, settings.chunk_rows, fs.n_videos)
                stats.killed_rows.append(row)
            if on_progress:
                on_progress(stats)
    # The final counts come from the store, not from the tasks' results: a task that finished its rows on a
    # worker killed just after (by another task) is reported as killed, and its rows are done all the same.
    done_all = np.ones(fs.n_videos, bool)
    failed_any = np.zeros(fs.n_videos, bool)
    for name in stats.set_names:
        fset = fs.feature_set(name)
        done_all &= fset.done()
        failed_any[list(fset.errors())] = True
    stats.done, stats.failed = int(done_all[pending].sum()), int((failed_any & ~done_all)[pending].sum())
    for name in logit_sets:
        stats.predictions[f"{name}_logits"] = write_logit_predictions(fs, name, f"{name}{LOGITS_SUFFIX}")
    stats.seconds = time.perf_counter() - t0
    return stats


def _add(stats: ClusterStats, result: RangeResult) -> None:
    stats.done += result.done
    stats.failed += result.failed
    stats.clips += result.clips
    stats.per_worker[result.worker] += result.done + result.failed
