"""Scale: every stage-two command on a store of ``--rows`` videos (default 1,000,000), each in its own process.

Data: :func:`store.testing.make_clustered_store`: 313 classes, 8 clips x 256 dims float16
per video, 626 concepts of uneven size (clustered, embedding-like features; a video's labels
follow its concept), 70/15/15 train/val/test. The store is built once, block by block, in a
child process and cached under ``<workdir>/scale/rows_N/`` between runs (its build figures are
kept beside it).

Each step runs the real command (``python -m ...``) as a child process; the wall seconds and
the child's peak resident memory (``/usr/bin/time``'s maximum resident set size) are
recorded as ``STEP_s`` and ``STEP_peak_rss_gb``, with the child's user + system CPU seconds as
``STEP_cpu_s`` (on a loaded machine the wall time is mostly waiting for a core):

- ``build``: the store (cached; the figures of the run that built it);
- ``verify``: ``store.verify``;
- ``train_mean_mlp``, ``train_nextvlad``: ``heads.train``, 1 epoch, predictions written;
- ``index_build``: ``store.search --rebuild`` (auto index: IVF-fp16 above 20k vectors);
- ``search``: the saved index vs exact faiss Flat over the same vectors on 1,000 stored rows
  (each left out of its own list): ``search_recall_at_10``, ``search_qps``, ``exact_qps``,
  ``search_speedup_vs_exact``;
- ``knn``: ``heads.knn --folds 3``;
- ``fusion_xgboost``, ``fusion_logistic``: ``fusion.run`` over the three runs above
  (mean_mlp, nextvlad, knn), fitted on val, scored on test.

A child past ``--max-rss-gb`` (default 16) is killed (the machine is shared). A failed step
is reported and counted in ``failed_steps``; the others still run. ``--steps a,b`` runs only
those steps (e.g. ``verify,index_build,search,knn``; ``search`` needs a built index and
``fusion_*`` the three runs).

Targets (issue 21, at 1M rows on a 2-core, 24 GB machine): every step completes; peak RSS
``verify`` <= 1 GB, ``train_*`` <= 4 GB, ``knn`` <= 3 GB, ``fusion_*`` <= 8 GB;
``index_build`` <= 60 s, ``knn`` <= 180 s, ``fusion_xgboost`` <= 600 s; search recall@10 >=
0.95 at >= 50x the queries/s of exact search.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.registry import register_benchmark
from store.cli import run_command

DEFAULT_ROWS = 1_000_000
FEATURES = "clustered"
N_QUERIES = 1000
K = 10
RUNS = ("mean_mlp", "nextvlad", "knn")
STEPS = ("verify", "train_mean_mlp", "train_nextvlad", "index_build", "search", "knn", "fusion_xgboost",
         "fusion_logistic")
_GB = 2**30
TIME = "/usr/bin/time"  # GNU time: the peak RSS of exactly the command it runs


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def run_step(name: str, cmd: list[str], log_dir: Path, max_rss_gb: float) -> dict[str, Any]:
    """Run ``cmd`` as a child; its wall seconds, CPU seconds, peak RSS (GB) and exit status.

    The child runs under ``/usr/bin/time -f "%U %S %M"``: its peak RSS is that of the command
    itself (``ru_maxrss`` seen from this process would start at this process's own RSS, inherited
    through fork), and its user + system CPU seconds tell its work apart from the wait for a
    core on a loaded machine. Its stdout and stderr go to ``log_dir/NAME.log``. A watchdog polls the
    child's RSS (with its own children) and kills it past ``max_rss_gb``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    killed = threading.Event()
    usage_file = log_dir / f"{name}.time"
    with log.open("w") as out:
        t = time.perf_counter()
        child = subprocess.Popen([TIME, "-f", "%U %S %M", "-o", str(usage_file), *cmd], stdout=out,
                                 stderr=subprocess.STDOUT, env=env)

        def watch() -> None:
            proc = psutil.Process(child.pid)
            while child.returncode is None and not killed.is_set():
                try:
                    rss = sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
                except psutil.Error:
                    return
                if rss > max_rss_gb * _GB:
                    killed.set()
                    child.kill()
                    return
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        child.wait()
        seconds = time.perf_counter() - t
    killed_msg = f" (killed past --max-rss-gb {max_rss_gb:g})" if killed.is_set() else ""
    words = usage_file.read_text().split() if usage_file.is_file() else []  # a killed child: a note first
    usage = words[-3:] if len(words) >= 3 and words[-1].isdigit() else []
    peak = int(usage[2]) * 1024 / _GB if usage else float("nan")  # %M: KiB
    cpu = float(usage[0]) + float(usage[1]) if usage else float("nan")
    ok = child.returncode == 0
    print(f"   {name:16s} {seconds:8.1f} s  cpu {cpu:8.1f} s  peak RSS {peak:6.2f} GB  "
          f"{'ok' if ok else f'FAILED (exit {child.returncode}){killed_msg}; see {log}'}", flush=True)
    if not ok:
        print("   | " + "\n   | ".join(log.read_text(errors="replace").strip().splitlines()[-8:]))
    return {"seconds": seconds, "cpu_s": cpu, "peak_gb": peak, "ok": ok}


def _build(store: Path, rows: int) -> None:
    """The cached store (child process entry)."""
    from tqdm import tqdm

    from store.testing import make_clustered_store

    make_clustered_store(store, n_videos=rows, feature_set=FEATURES, progress=tqdm)


def _search(store: Path, out: Path) -> None:
    """Saved index vs exact Flat on N_QUERIES stored rows (child process entry)."""
    import faiss

    from store import FeatureStore
    from store.index import feature_vectors, open_index

    fs = FeatureStore.open(store)
    fset = fs.feature_set(FEATURES)
    index = open_index(fset, gpu=False)
    vectors, rows, _ = feature_vectors(fset)  # (n, D) float32, unit norm
    # Seed 1: not the sample the index tuned nprobe on (IndexSpec.seed 0), so recall is not measured on it.
    pick = np.sort(np.random.default_rng(1).choice(len(rows), size=min(N_QUERIES, len(rows)), replace=False))
    q, q_rows = np.ascontiguousarray(vectors[pick]), rows[pick]
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    del vectors
    t = time.perf_counter()
    _, pos = exact.search(q, K + 1)  # own row first (or tied): dropped below
    exact_s = time.perf_counter() - t
    truth = [[r for r in rows[p] if r != own][:K] for p, own in zip(pos, q_rows, strict=True)]
    index.search(q[:50], K, exclude_rows=q_rows[:50])  # warm-up
    t = time.perf_counter()
    _, found = index.search(q, K, exclude_rows=q_rows)
    search_s = time.perf_counter() - t
    recall = float(np.mean([len(set(f) & set(tr)) / K for f, tr in zip(found.tolist(), truth, strict=True)]))
    out.write_text(json.dumps({"search_recall_at_10": recall, "search_qps": len(q) / search_s,
                               "exact_qps": len(q) / exact_s, "index": index.describe()}))


def _steps(store: Path, work: Path) -> list[tuple[str, list[str]]]:
    s = str(store)
    train = ["--store", s, "--features", FEATURES, "--epochs", "1", "--quiet"]
    fusion = ["--store", s, "--runs", *RUNS, "--fit-split", "val", "--eval-split", "test", "--compare", "--overwrite"]
    return [
        ("verify", _python("store.verify", s, "-q")),
        ("train_mean_mlp", _python("heads.train", *train, "--head", "mean_mlp", "--run-name", "mean_mlp",
                                   "--out", str(work / "runs" / "mean_mlp"))),
        ("train_nextvlad", _python("heads.train", *train, "--head", "nextvlad", "--run-name", "nextvlad",
                                   "--out", str(work / "runs" / "nextvlad"))),
        ("index_build", _python("store.search", "--store", s, "--features", FEATURES, "--id", "vid00000000",
                                "--rebuild", "--cpu")),
        ("search", _python("benchmarks.scale_bench", "search", s, str(work / "search.json"))),
        ("knn", _python("heads.knn", "--store", s, "--features", FEATURES, "--folds", "3", "--run", "knn",
                        "--cpu", "-q")),
        ("fusion_xgboost", _python("fusion.run", *fusion, "--method", "xgboost")),
        ("fusion_logistic", _python("fusion.run", *fusion, "--method", "logistic")),
    ]


@register_benchmark("scale", "stage two at --rows videos (default 1M): wall seconds and peak RSS of every command")
def bench_scale(args: argparse.Namespace) -> dict[str, Any]:
    rows = getattr(args, "rows", None) or args.size or DEFAULT_ROWS
    max_rss = getattr(args, "max_rss_gb", None) or 16.0
    work = args.workdir / "scale" / f"rows_{rows}"
    store = work / "store.zarr"
    built = work / "build.json"
    m: dict[str, Any] = {"rows": float(rows)}
    print(f"   {rows:,} videos x 8 clips x 256 float16, 313 classes; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    if not built.is_file():
        step = run_step("build", _python("benchmarks.scale_bench", "build", str(store), str(rows)), work / "logs",
                        max_rss)
        if not step["ok"]:
            raise RuntimeError(f"building the {rows}-row store failed; see {work / 'logs' / 'build.log'}")
        built.write_text(json.dumps(step))
    else:
        print(f"   store cached at {store} (build figures from the run that made it)")
    step = json.loads(built.read_text())
    m["build_s"], m["build_peak_rss_gb"] = step["seconds"], step["peak_gb"]
    failed = []
    wanted = getattr(args, "steps", None)
    for name, cmd in _steps(store, work):
        if wanted and name not in wanted:
            continue
        step = run_step(name, cmd, work / "logs", max_rss)
        m[f"{name}_s"], m[f"{name}_peak_rss_gb"] = step["seconds"], step["peak_gb"]
        m[f"{name}_cpu_s"] = step["cpu_s"]
        if not step["ok"]:
            failed.append(name)
    if "search" not in failed and (not wanted or "search" in wanted):
        found = json.loads((work / "search.json").read_text())
        print(f"   search: {found.pop('index')}")
        m.update(found)
        m["search_speedup_vs_exact"] = m["search_qps"] / m["exact_qps"]
    m["failed_steps"] = float(len(failed))
    for key, v in m.items():
        print(f"   {key:28s} {v:14,.3f}")
    if failed:
        print(f"   FAILED steps: {', '.join(failed)}")
    return m


@run_command
def main(argv: list[str] | None = None) -> int:
    """Child-process entries: ``build STORE ROWS`` and ``search STORE OUT.json``."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale_bench",
                                 description="child steps of `python -m benchmarks.run --only scale`")
    sub = ap.add_subparsers(dest="step", required=True)
    b = sub.add_parser("build", help="build the clustered store block by block")
    b.add_argument("store", type=Path)
    b.add_argument("rows", type=int)
    s = sub.add_parser("search", help="saved index vs exact Flat on 1,000 stored rows")
    s.add_argument("store", type=Path)
    s.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    if args.step == "build":
        _build(args.store, args.rows)
    else:
        _search(args.store, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
