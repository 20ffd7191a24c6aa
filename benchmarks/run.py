"""``python -m benchmarks.run``: run the benchmark suite (or one with ``--only``).

Each benchmark prints its figures and the ratios against its baseline; ``--json OUT``
writes one ``{"benchmark": name, "metrics": {...}}`` object per line.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import benchmarks.extract_bench  # noqa: F401  (registers "extract")
import benchmarks.fusion_bench  # noqa: F401  (registers "fusion")
import benchmarks.heads_bench  # noqa: F401  (registers "heads")
import benchmarks.search_bench  # noqa: F401  (registers "search")
import benchmarks.store_bench  # noqa: F401  (registers "store")
import benchmarks.sweep_bench  # noqa: F401  (registers "sweep")
import benchmarks.train_bench  # noqa: F401  (registers "train")
from benchmarks.registry import describe, get_benchmark, list_benchmarks


def machine() -> str:
    import os

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="benchmarks: " + "; ".join(f"{n}: {describe(n)}" for n in list_benchmarks()))
    ap.add_argument("--only", action="append", choices=list_benchmarks(), help="run only this benchmark (repeatable)")
    ap.add_argument("--json", type=Path, help="write metrics as JSON lines to this file")
    ap.add_argument("--workdir", type=Path, default=Path("benchmarks/_work"),
                    help="scratch directory for generated data (default benchmarks/_work)")
    ap.add_argument("--size", type=int, default=None, help="override the benchmark's main size (rows/vectors)")
    args = ap.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    results = []
    for name in args.only or list_benchmarks():
        print(f"\n== {name}: {describe(name)}")
        t0 = time.perf_counter()
        metrics = get_benchmark(name)(args)
        print(f"   ({time.perf_counter() - t0:.0f} s)")
        results.append({"benchmark": name, "metrics": metrics})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in results))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
