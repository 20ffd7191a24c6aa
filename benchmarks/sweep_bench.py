"""Head sweep: 8 configurations on a 2-worker Dask LocalCluster vs one after another in one process.

The configurations are ``benchmarks/grids/demo_sweep.toml`` (VLAD-family, soft-DBoF and
non-local heads, 3 epochs) on a synthetic store of ``--size`` videos (default 4000) x 8 clips
x 128 dims. Both sides run the same task function (:func:`heads.sweep.train_task`): features
read once per process, every run's predictions written to the store.

- ``serial_s``: in this process, one torch thread (each task's share of the 2 cores).
- ``sweep_s``: ``run_sweep`` on ``LocalCluster(2 workers, 1 thread each, processes)``.
- ``cluster_start_s`` (reported apart): starting the cluster and importing the training stack
  in each worker; this process gets the same warm-up before ``serial_s`` is timed.

Both sides run ``REPEATS`` times, alternating (serial, sweep, serial, sweep, ...), and the best
time of each side is compared (as ``timeit`` does): a single pair on a shared 2-core VM moved
by +-15% between identical runs. Every repeat is printed.

``sweep_speedup = serial_s / sweep_s`` (target >= 1.7 on 2 cores). The machine's load average
is reported: other processes on the cores slow the two sides unequally (a sweep that wants
both cores loses more to a neighbour than a serial run that wants one). ``serial_cpu_s`` and
``sweep_cpu_s`` (CPU time of the trainings, summed) do not depend on the load: their ratio
shows what running in a Dask worker costs per configuration. ``worker_busy`` is the share of
``sweep_s`` the two workers spent training (the rest: scheduling, feature loading, the tail).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from benchmarks.registry import register_benchmark

GRID = Path(__file__).parent / "grids" / "demo_sweep.toml"
TARGET = 1.7
REPEATS = 3


def _warm() -> int:
    """Import the training stack (torch's deterministic-algorithms switch imports torch._inductor)."""
    import torch

    import heads.trainer  # noqa: F401

    torch.use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled(),
                                       warn_only=torch.is_deterministic_algorithms_warn_only_enabled())
    return os.getpid()


@register_benchmark("sweep", "8 head configs: 2-worker Dask LocalCluster sweep vs the same configs one after another")
def bench_sweep(args: argparse.Namespace) -> dict[str, float]:
    import numpy as np
    import pandas as pd
    from distributed import Client, LocalCluster

    from heads import expand_grid, load_grid
    from heads.sweep import run_sweep
    from store.testing import make_synthetic_store

    n = args.size or 4000
    work = args.workdir / "sweep"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fs = make_synthetic_store(work / "synthetic.zarr", n_videos=n, n_classes=20, clips=8, dim=128, seed=0)
    configs = expand_grid(load_grid(GRID), name=GRID.name)
    load_before = os.getloadavg()[0]
    print(f"   {len(configs)} configs ({GRID.name}) on {n} videos x 8 clips x 128; load average {load_before:.1f} "
          f"on {os.cpu_count()} cores")

    _warm()
    t = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        client.run(_warm)
        cluster_start_s = time.perf_counter() - t
        runs: dict[str, list[tuple[float, pd.DataFrame]]] = {"serial": [], "sweep": []}
        for _ in range(REPEATS):
            for side, on in (("serial", None), ("sweep", client)):
                t = time.perf_counter()
                table = run_sweep(fs.path, configs, client=on, torch_threads=1, resume=False, progress=False)
                runs[side].append((time.perf_counter() - t, table))
    serial_times, sweep_times = ([s for s, _ in runs[side]] for side in ("serial", "sweep"))
    (serial_s, serial), (sweep_s, sweep) = (min(runs[side], key=lambda r: r[0]) for side in ("serial", "sweep"))
    load_after = os.getloadavg()[0]

    for table in (serial, sweep):
        if not (table["status"] == "done").all():
            raise RuntimeError(f"a configuration failed: {table.loc[table['status'] != 'done', 'error'].tolist()}")
    by_hash = [t.set_index("config_hash")["val_class_map"] for t in (serial, sweep)]
    map_diff = float(np.max(np.abs(by_hash[0] - by_hash[1].loc[by_hash[0].index])))
    speedup = serial_s / sweep_s
    print(f"   one after another, 1 thread:     {serial_s:6.1f} s  (per config: "
          f"{serial['seconds'].min():.1f}-{serial['seconds'].max():.1f} s; repeats "
          f"{', '.join(f'{x:.1f}' for x in serial_times)})")
    print(f"   cluster start (2 workers):       {cluster_start_s:6.1f} s  (not in sweep_s)")
    print(f"   Dask sweep, 2 workers x 1 thread:{sweep_s:6.1f} s  "
          f"(repeats {', '.join(f'{x:.1f}' for x in sweep_times)})")
    print(f"   sweep_speedup = {speedup:.2f} (target >= {TARGET}); with the cluster start "
          f"{serial_s / (sweep_s + cluster_start_s):.2f}")
    cpu = [float(t["cpu_seconds"].sum()) for t in (serial, sweep)]
    busy = float(sweep["seconds"].sum()) / (2 * sweep_s)
    print(f"   CPU time of the trainings: serial {cpu[0]:.1f} s, sweep {cpu[1]:.1f} s (ratio {cpu[1] / cpu[0]:.2f}); "
          f"workers busy {100 * busy:.0f}% of sweep_s")
    print(f"   best val class mAP {sweep['val_class_map'].max():.4f} ({sweep['run'].iloc[0]}); "
          f"max |serial - sweep| val mAP {map_diff:.1e}; load average {load_before:.1f} -> {load_after:.1f}")
    return {"configs": len(configs), "videos": n, "serial_s": serial_s,
            "cluster_start_s": cluster_start_s, "sweep_s": sweep_s, "sweep_speedup": speedup,
            "serial_cpu_s": cpu[0], "sweep_cpu_s": cpu[1], "worker_busy": busy,
            "sweep_speedup_with_start": serial_s / (sweep_s + cluster_start_s),
            "repeats": REPEATS, "serial_s_repeats": serial_times, "sweep_s_repeats": sweep_times,
            "target": TARGET,
            "max_val_map_diff": map_diff, "load_before": load_before, "load_after": load_after}
