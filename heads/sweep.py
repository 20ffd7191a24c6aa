"""``python -m heads.sweep``: a grid or random search over heads, run as Dask tasks.

Example::

    python -m heads.sweep --store demo.zarr --grid benchmarks/grids/demo_sweep.toml
    python -m heads.sweep --store demo.zarr --grid grid.toml --scheduler tcp://10.0.0.5:8786
    python -m heads.sweep --store demo.zarr --grid grid.toml --cluster slurm --slurm slurm.toml

::

    grid.toml ── expand_grid ──> TrainConfigs (all validated) ── plan_sweep ──> cached | to run
                                                                                  |
      client.submit(train_task, one per config, retries) ── Dask workers (1 torch thread each):
          per-process FeatureCache (features read once per worker), train_head, write the run
                                                                                  |
      as_completed ──> results table (val class mAP first) ──> printed + CSV

Without ``--scheduler`` or ``--cluster`` a ``LocalCluster`` of one single-threaded worker process
per core runs the tasks (the flags are the same for every Dask command: ``store/cluster.py``).
A configuration whose hash matches a prediction run already in the store is not
recomputed ("cached"), so an interrupted sweep continues with the same command. See
``heads/README_sweep.md``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from heads._grid import GridError, expand_grid, flat_settings, load_grid, varied_settings
from heads._train_data import (
    MEMORY_FRACTION,
    FeatureCache,
    available_memory,
    check_feature_sets,
    estimate_bytes,
)
from heads.trainer import TrainConfig, build_head, train_head
from store.cli import non_negative_int, positive_int, run_command
from store.cluster import CLUSTERS, connect, dashboard_link, gpu_resources, local_cluster
from store.errors import StoreError, VideoFeatError
from store.feature_store import FeatureStore
from store.malloc import raise_malloc_thresholds
from store.threads import SAMPLE_S, add_threads_argument, available_cores, free_cores, set_threads

__all__ = ["METRICS", "available_cores", "completed_runs", "dashboard_link", "estimate_cost", "local_cluster",
           "plan_sweep", "results_table", "run_sweep", "train_task", "worker_cache"]

log = logging.getLogger(__name__)

METRICS = ("class_map", "sample_map", "gap20", "top1")  # val metrics in the results table
_CACHES: OrderedDict[tuple[str, tuple[str, ...]], FeatureCache] = OrderedDict()  # this process's features
Outcome = dict[str, Any]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "(no message)"
    return text if isinstance(exc, (StoreError, ValueError)) else f"{type(exc).__name__}: {text}"


# ---------------------------------------------------------------------------------- worker side
_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """Undo the fixed malloc thresholds a Dask nanny starts its workers with, once per process.

    ``MALLOC_TRIM_THRESHOLD_=65536`` also pins glibc's mmap threshold at 128 KiB: every activation
    tensor became an ``mmap`` + page faults + ``munmap``, and training took twice the CPU time it
    takes in a plain process. 32 / 64 MiB are what glibc's own adaptive thresholds reach.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not any(k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")):
        return
    try:  # glibc read the variables when this process started: only a worker spawned with them has them
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return
    _MALLOC_TUNED = True
    if raise_malloc_thresholds():  # False where the C library is not glibc: the variables mean nothing there
        log.info("raised malloc's mmap / trim thresholds in worker process %d", os.getpid())


def _held_bytes() -> int:
    return sum(c.data.nbytes + c.mask.nbytes + c.labels.nbytes for c in _CACHES.values())


def worker_cache(store: FeatureStore, features: Sequence[str]) -> FeatureCache | None:
    """This process's :class:`FeatureCache` of ``features``: read on first use, then reused.

    Caches of other feature sets are dropped (least recently used first) while the new one would
    not fit in ``MEMORY_FRACTION`` of the RAM; None when even alone it would not (stream instead).
    """
    key = (str(Path(store.path).resolve()), tuple(features))
    cache = _CACHES.get(key)
    if cache is not None and cache.n_videos == store.n_videos:
        _CACHES.move_to_end(key)
        return cache
    _CACHES.pop(key, None)
    need = estimate_bytes(store, features)
    if need > MEMORY_FRACTION * (available_memory() + _held_bytes()):
        return None
    while _CACHES and need + _held_bytes() > MEMORY_FRACTION * (available_memory() + _held_bytes()):
        _CACHES.popitem(last=False)
    _CACHES[key] = cache = FeatureCache.load(store, features)
    return cache


def train_task(store: str, config: TrainConfig, run_name: str, torch_threads: int | None = None,
               before_train: Callable[[TrainConfig], None] | None = None) -> Outcome:
    """One configuration (on a Dask worker, or in this process): train, write the prediction run.

    Args:
        store: Store path (workers open it themselves; it must be reachable from them).
        config: The configuration.
        run_name: Prediction run to write.
        torch_threads: torch, faiss, OpenMP and BLAS threads for this task (:func:`store.threads.set_threads`;
            None: unchanged).
        before_train: Called with ``config`` just before training (instrumentation, tests).

    Returns:
        ``{"status": "done", "run", "seconds", "cpu_seconds", "metrics": {"val", "test"}, "worker"}``
        (``cpu_seconds``: the process's CPU time while training; below ``seconds`` when the core
        was shared), or
        ``{"status": "failed", "error"}`` for a user error (bad data, bad settings). Any other
        exception propagates, so Dask retries the task.
    """
    _tune_malloc()
    previous = torch.get_num_threads()
    if torch_threads:
        set_threads(torch_threads)
    try:
        fs = FeatureStore.open(store, "a")
        data = None if config.reader == "stream" else worker_cache(fs, config.features)
        if config.reader == "memory" and data is None:
            data = FeatureCache.load(fs, config.features)  # asked for RAM explicitly: one-off, not kept
        if before_train is not None:
            before_train(config)
        start, cpu = time.perf_counter(), time.process_time()
        result = train_head(fs, config, run_name=run_name, data=data, progress=False)
    except (VideoFeatError, ValueError) as exc:  # a user error, a config the data cannot take: retrying won't help
        return {"status": "failed", "run": run_name, "error": _one_line(exc)}
    finally:
        if torch_threads:
            set_threads(previous)
    return {"status": "done", "run": run_name, "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu, "metrics": {s: result.metrics[s] for s in ("val", "test")},
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


# ---------------------------------------------------------------------------------- client side
def completed_runs(store: FeatureStore) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{config hash: (run name, attrs)}`` of the store's prediction runs made by ``train_head``.

    A run with fewer rows than the store (videos appended since) does not count.
    """
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for run in store.prediction_runs():
        attrs = store.prediction_attrs(run)
        digest = attrs.get("config_hash")
        if not digest:
            continue
        if store.prediction_rows(run) != store.n_videos:
            log.info("run %s predates the last append: its configuration is trained again", run)
            continue
        out.setdefault(digest, (run, attrs))
    return out


def estimate_cost(config: TrainConfig, clips: int, dim: int, num_classes: int) -> float:
    """Relative training cost of ``config``: forward FLOPs per video x epochs x models trained.

    Counted by ``torch.utils.flop_counter`` on one forward pass of a 2-video batch (milliseconds
    for a head); the sweep starts the most expensive configurations first, so that no long one is
    left running alone at the end while the other workers idle (longest-processing-time order).
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]):
        model = build_head(config, dim, num_classes).train()
        x, mask = torch.zeros(2, clips, dim), torch.ones(2, clips, dtype=torch.bool)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, mask)
    return counter.get_total_flops() / 2 * config.epochs * max(1, config.folds)


def plan_sweep(store: FeatureStore | str | Path, configs: Sequence[TrainConfig], *,
               resume: bool = True) -> tuple[list[TrainConfig], dict[str, Outcome]]:
    """Check a sweep against the store and split it into what to train and what is there already.

    Returns:
        ``(configurations to train, most expensive first (:func:`estimate_cost`),
        {config hash: outcome of a run already in the store})``.

    Raises:
        FeatureSetNotFound / ShapeMismatch: a configuration names a feature set the store lacks,
            or sets of different K.
        ValueError: two configurations would write the same run name.
    """
    fs = store if isinstance(store, FeatureStore) else FeatureStore.open(store, "r")
    fs.refresh()  # runs and rows written since it was opened
    # every set, also of configurations already trained: (K, D) of each combination
    shapes = {f: check_feature_sets(fs, f) for f in dict.fromkeys(c.features for c in configs)}
    names = {c.config_hash(): c.default_run_name() for c in configs}
    if len(set(names.values())) != len(names):  # two hashes with the same first 8 digits
        raise GridError("two configurations would write the same run name; change a setting of one of them")
    done = completed_runs(fs) if resume else {}
    cached = {h: {"status": "cached", "run": done[h][0], "metrics": done[h][1].get("metrics", {})}
              for h in names if h in done}
    todo = list({c.config_hash(): c for c in configs if c.config_hash() not in cached}.values())
    cost = {c.config_hash(): estimate_cost(c, *shapes[c.features], len(fs.classes)) for c in todo}
    todo.sort(key=lambda c: -cost[c.config_hash()])  # stable: equal costs keep the grid's order
    return todo, cached


def run_sweep(store: FeatureStore | str | Path, configs: Sequence[TrainConfig], *, client: Any = None,
              torch_threads: int | None = None, retries: int = 2, resume: bool = True, progress: bool = True,
              before_train: Callable[[TrainConfig], None] | None = None) -> pd.DataFrame:
    """Train every configuration not yet in the store and tabulate all of them.

    Args:
        store: The store; every run's predictions are written into it by the task that trains it.
        configs: The configurations (duplicates are trained once).
        client: A ``distributed.Client``: one task per configuration. None trains them one after
            another in this process (the same task function, no Dask).
        torch_threads: torch, OpenMP and BLAS threads per task (None: the process's setting).
        retries: Times Dask resubmits a task that raised (a killed worker's tasks are resubmitted
            by the scheduler regardless, up to ``distributed.scheduler.allowed-failures``).
        resume: Skip configurations whose config hash matches a run in the store (status "cached").
        progress: A tqdm bar over completed tasks.
        before_train: Passed to :func:`train_task` (must be picklable for a client).

    Returns:
        :func:`results_table` of every configuration.
    """
    fs = store if isinstance(store, FeatureStore) else FeatureStore.open(store, "r")
    todo, outcomes = plan_sweep(fs, configs, resume=resume)
    log.info("sweep: %d configuration(s) to train, %d in the store already", len(todo), len(outcomes))
    path = str(Path(fs.path).resolve())  # the workers' working directory may differ
    bar = tqdm(total=len(todo), desc="sweep", unit="run", disable=not progress or not todo)

    def record(config: TrainConfig, outcome: Outcome) -> None:
        outcomes[config.config_hash()] = outcome
        bar.update()
        best = [o["metrics"]["val"]["class_map"] for o in outcomes.values() if (o.get("metrics") or {}).get("val")]
        if best:
            bar.set_postfix(best_val_map=f"{max(best):.4f}")

    try:
        if client is None:
            for c in todo:
                record(c, train_task(path, c, c.default_run_name(), torch_threads, before_train))
        else:
            _run_on_dask(client, path, todo, torch_threads, retries, before_train, record)
    finally:
        bar.close()
    return results_table(configs, outcomes)


def _run_on_dask(client: Any, path: str, todo: list[TrainConfig], torch_threads: int | None, retries: int,
                 before_train: Callable[[TrainConfig], None] | None,
                 record: Callable[[TrainConfig, Outcome], None]) -> None:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]  # a fresh key per sweep: a rerun never picks up an old task's result
    gpu = gpu_resources(client) if any(c.device.startswith("cuda") for c in todo) else None
    futures = {client.submit(train_task, path, c, c.default_run_name(), torch_threads, before_train, pure=False,
                             retries=retries, priority=len(todo) - i, key=f"train-{c.default_run_name()}-{token}",
                             resources=gpu if c.device.startswith("cuda") else None): c
               for i, c in enumerate(todo)}  # todo is most expensive first: run in that order
    # A config asking for CUDA goes to a worker that advertises the resource GPU when there is one
    # (store/cluster.py's cuda and GPU-gres slurm clusters do); "auto" runs anywhere.
    try:
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 -- retries spent, KilledWorker: this config fails, not the sweep
                outcome = {"status": "failed", "run": futures[future].default_run_name(), "error": _one_line(exc)}
            record(futures[future], outcome)
    finally:
        client.cancel([f for f in futures if not f.done()])


def results_table(configs: Sequence[TrainConfig], outcomes: dict[str, Outcome]) -> pd.DataFrame:
    """One row per configuration, best val class mAP first (failed ones last).

    Columns: ``run, head, loss, features``, the settings that vary across ``configs``,
    ``val_class_map, val_sample_map, val_gap20, val_top1, seconds, cpu_seconds, status, error,
    config_hash`` (``seconds``: the training's wall time; NaN for cached and failed runs).
    """
    configs = list({c.config_hash(): c for c in configs}.values())
    varied = varied_settings(configs)
    records = []
    for c in configs:
        o = outcomes.get(c.config_hash(), {"status": "failed", "error": "not run"})
        val = (o.get("metrics") or {}).get("val") or {}
        flat = flat_settings(c)
        records.append({"run": o.get("run", c.default_run_name()), "head": c.head, "loss": c.loss,
                        "features": "+".join(c.features), **{k: flat.get(k) for k in varied},
                        **{f"val_{m}": val.get(m, math.nan) for m in METRICS},
                        "seconds": o.get("seconds", math.nan), "cpu_seconds": o.get("cpu_seconds", math.nan),
                        "status": o["status"], "error": o.get("error", ""),
                        "config_hash": c.config_hash()})
    table = pd.DataFrame(records)
    for k in varied:  # settings as given (16, not 16.0 beside a missing value)
        table[k] = pd.Series([r[k] for r in records], dtype=object)
    if len(table):
        table = table.sort_values("val_class_map", ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True)


# ---------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m heads.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, required=True, help="the feature store (NAME.zarr)")
    ap.add_argument("--grid", type=Path, required=True, metavar="GRID.toml",
                    help="the sweep: [base], [grid] / [[grid]], [[runs]], [random] (heads/README_sweep.md)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="an existing Dask cluster's scheduler")
    where.add_argument("--cluster", choices=CLUSTERS, help="start a Dask cluster: local (default: one worker "
                       "process per core), cuda (one per GPU) or slurm (--slurm FILE.toml; store/cluster.py)")
    ap.add_argument("--slurm", type=Path, metavar="FILE.toml", help="the Slurm cluster of --cluster slurm")
    where.add_argument("--serial", action="store_true", help="train one after another in this process (no Dask)")
    ap.add_argument("--workers", type=positive_int, help="LocalCluster worker processes (default: one per core)")
    add_threads_argument(ap, "--torch-threads", help="torch, OpenMP and BLAS threads per task (default: the free "
                         "cores in --serial, free cores / workers on a LocalCluster, 1 on --scheduler)")
    ap.add_argument("--out", type=Path, metavar="CSV", help="results table (default runs/sweep_<grid name>.csv)")
    ap.add_argument("--rerun", action="store_true", help="train configurations already in the store again")
    ap.add_argument("--retries", type=non_negative_int, default=2,
                    help="resubmissions of a task that raised (default 2)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def format_table(table: pd.DataFrame) -> str:
    """The printed results table (settings as given, errors cut to 60 characters, no config hash)."""
    shown = table.drop(columns=["config_hash"]).assign(error=table["error"].str.slice(0, 60))
    formats = {**{f"val_{m}": "{:.4f}" for m in METRICS}, "seconds": "{:.2f}", "cpu_seconds": "{:.2f}"}
    formatters = {k: (lambda x, f=f: "-" if pd.isna(x) else f.format(x)) for k, f in formats.items()}
    return shown.to_string(index=False, na_rep="-", formatters=formatters)


def _sweep(args: argparse.Namespace, configs: list[TrainConfig]) -> pd.DataFrame:
    kwargs = {"retries": args.retries, "resume": not args.rerun, "progress": not args.quiet}
    if args.serial:
        return run_sweep(args.store, configs, torch_threads=set_threads(args.threads), **kwargs)
    with connect(args.scheduler, args.cluster or (None if args.scheduler else "local"), workers=args.workers,
                 slurm=args.slurm) as client:
        if args.threads:
            threads = args.threads
        elif args.scheduler or args.cluster in ("slurm", "cuda"):
            threads = 1
        else:
            threads = max(1, free_cores(sample_s=SAMPLE_S) // max(1, len(client.scheduler_info()["workers"])))
        link = dashboard_link(client)
        print(f"dashboard: {link}" if link else "dashboard unavailable (pip install bokeh)", flush=True)
        return run_sweep(args.store, configs, client=client, torch_threads=threads, **kwargs)


@run_command(interrupted="finished runs are in the store; the same command continues the sweep")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or Path("runs") / f"sweep_{args.grid.stem}.csv"
    configs = expand_grid(load_grid(args.grid), name=args.grid.name)
    todo, cached = plan_sweep(args.store, configs, resume=not args.rerun)
    print(f"sweep of {len(configs)} configuration(s): {len(todo)} to train, {len(cached)} in the store already",
          flush=True)
    table = _sweep(args, configs) if todo else results_table(configs, cached)
    print(format_table(table))
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    done, failed = (int((table["status"] == s).sum()) for s in ("done", "failed"))
    print(f"wrote {out}; {done} new prediction run(s) in {args.store}" + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
