"""Extraction on a Dask LocalCluster (``extract.dump.cluster``): 1 vs 2 workers, and a worker SIGKILLed mid-run.

On ``VIDEOS`` demo videos (112 px, 3 s) with the TSN ResNet-18 at 112 px, 8 clips, every
worker deciding in its own process (``--workers 0 --threads 1``: one core per Dask worker):

* ``distributed_1_worker_s`` / ``distributed_2_workers_s``: wall seconds from starting the
  cluster to the last row written (cluster start, model builds and header probing included);
* ``distributed_speedup``: their ratio (the acceptance asks >= 1.6 on a machine with 2 free cores);
* a third run on 2 workers in which one worker is SIGKILLed as soon as some rows are done:
  ``distributed_rows_lost`` (rows done at the kill that are not done at the end: must be 0),
  ``distributed_killed`` (1 when the kill happened before the run ended),
  ``distributed_rows_kept_from_killed`` (rows the killed worker had finished and no one redid),
  ``distributed_kill_verified`` (1 when ``store.verify`` passes) and
  ``distributed_kill_equal_features`` (1 when the features equal the 1-worker run's, which
  equal a single-process run's: same model, same inputs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import threading
import time

import numpy as np

from benchmarks.registry import register_benchmark
from extract.demo import DemoConfig, make_demo
from extract.dump.cluster import extract_on_cluster
from extract.dump.settings import ExtractSettings
from store import FeatureStore
from store.cluster import connect
from store.verify import verify_store

VIDEOS = 400  # enough that cluster start, probing and model builds (~10 s) do not hide the speed-up
SETTINGS = ExtractSettings(backbone="resnet18", weights="random", crop=112, clips=8, chunk_rows=16, batch_size=32,
                           workers=0, threads=1, device="cpu")
SET = "rgb_resnet18"


def _timed_run(demo, store, workers: int, kill_after_rows: int | None = None) -> tuple[float, dict]:
    """Seconds of one cluster run (cluster start included) and what a mid-run SIGKILL did."""
    shutil.rmtree(store, ignore_errors=True)
    killed: dict = {}
    finished = threading.Event()
    t0 = time.perf_counter()
    with connect(cluster="local", workers=workers) as client:
        if kill_after_rows is not None:
            def kill_one() -> None:  # watch the store; SIGKILL a worker once rows are done
                while not finished.wait(0.2):
                    try:
                        done = FeatureStore.open(store).feature_set(SET).done()
                    except Exception:  # noqa: BLE001 -- the store or the set is not made yet
                        continue
                    if done.sum() >= kill_after_rows:
                        pid = next(iter(client.run(os.getpid).values()))
                        killed["done_at_kill"] = np.flatnonzero(done)
                        os.kill(pid, signal.SIGKILL)
                        return
            watcher = threading.Thread(target=kill_one, daemon=True)
            watcher.start()
        try:
            stats = extract_on_cluster(client, demo.videos_csv, store, SETTINGS)
        finally:
            finished.set()
    killed["stats"] = stats
    return time.perf_counter() - t0, killed


@register_benchmark("distributed", "extract.run on a Dask LocalCluster: 1 vs 2 workers, and a worker SIGKILLed mid-run")
def bench_distributed(args: argparse.Namespace) -> dict[str, float]:
    n = args.size or VIDEOS
    work = args.workdir / "distributed"
    demo = make_demo(work / "demo", DemoConfig(videos=n, size=112, seconds=3.0), progress=False)
    one_s, _ = _timed_run(demo, work / "one.zarr", 1)
    two_s, _ = _timed_run(demo, work / "two.zarr", 2)
    print(f"1 worker {one_s:.1f} s, 2 workers {two_s:.1f} s: speed-up {one_s / two_s:.2f}x (cluster start included)")
    _, killed = _timed_run(demo, work / "kill.zarr", 2, kill_after_rows=max(1, n // 4))
    done_at_kill = killed.get("done_at_kill", np.zeros(0, np.int64))
    fset = FeatureStore.open(work / "kill.zarr").feature_set(SET)
    done = fset.done()
    lost = int((~done[done_at_kill]).sum())
    stats = killed["stats"]
    kept = stats.planned - stats.done - stats.failed
    equal = np.array_equal(fset.read()[0], FeatureStore.open(work / "one.zarr").feature_set(SET).read()[0])
    verified = verify_store(work / "kill.zarr").ok
    if "done_at_kill" not in killed:
        print("the run ended before a worker could be killed: give more videos (--size)")
    print(f"SIGKILL after {len(done_at_kill)} rows: rows lost {lost}, kept from the killed worker {kept}, "
          f"all done {bool(done.all())}, verify {'OK' if verified else 'FAILED'}, features equal {equal}")
    return {"videos": n, "distributed_1_worker_s": one_s, "distributed_2_workers_s": two_s,
            "distributed_speedup": one_s / two_s, "distributed_rows_lost": lost,
            "distributed_killed": float("done_at_kill" in killed),
            "distributed_rows_kept_from_killed": kept, "distributed_kill_verified": float(verified),
            "distributed_kill_equal_features": float(equal and bool(done.all()))}
