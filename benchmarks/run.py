"""``python -m benchmarks.run``: run the benchmark suite (or some with ``--only``) and write the report.

Each benchmark prints its figures and the ratios against its baseline. As each one finishes,
its metrics are saved to ``<workdir>/results/<name>.json`` with the date, the command line
and the machine; a benchmark that crashes keeps its earlier figures there (marked as such)
and the others still run. A run of all benchmarks (no ``--only``) then writes
``benchmarks/REPORT.md`` and its plots from every saved result, so one run earlier with
``--only`` appears too, with its own date. ``--report-only`` rebuilds the report from the
saved results without running anything. ``--json OUT`` also writes one
``{"benchmark": name, "metrics": {...}}`` object per line for this run.

The challenge recipes (``benchmarks/recipes/NAME.toml``, :mod:`benchmarks.recipes`) run with
``--recipe NAME``, each end to end on the demo set, printing its table in the layout of the
report it follows; a run of everything runs every recipe after the benchmarks (resuming what
is done; ``--no-recipes`` skips them). Their tables (``<workdir>/recipes/*/RESULT.md``) are
sections of the report.

Examples::

    python -m benchmarks.run                             # everything, then benchmarks/REPORT.md
    python -m benchmarks.run --only search --size 20000  # one benchmark (its result is saved)
    python -m benchmarks.run --only scale --rows 100000  # every stage-two command at 100k videos
    python -m benchmarks.run --recipe stanford           # one challenge recipe on the demo set
    python -m benchmarks.run --only gpu                  # everything that needs CUDA (one line without a GPU)
    python -m benchmarks.run --report-only               # REPORT.md from the saved results
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import benchmarks.decode_bench  # noqa: F401  (registers "decode")
import benchmarks.distributed_bench  # noqa: F401  (registers "distributed")
import benchmarks.extract_bench  # noqa: F401  (registers "extract")
import benchmarks.flow_bench  # noqa: F401  (registers "flow")
import benchmarks.fusion_bench  # noqa: F401  (registers "fusion")
import benchmarks.gpu_bench  # noqa: F401  (registers "gpu")
import benchmarks.heads_bench  # noqa: F401  (registers "heads")
import benchmarks.pipeline_bench  # noqa: F401  (registers "pipeline")
import benchmarks.scale_bench  # noqa: F401  (registers "scale")
import benchmarks.search_bench  # noqa: F401  (registers "search")
import benchmarks.store_bench  # noqa: F401  (registers "store")
import benchmarks.sweep_bench  # noqa: F401  (registers "sweep")
import benchmarks.train_bench  # noqa: F401  (registers "train")
from benchmarks.gpu_bench import NO_GPU
from benchmarks.recipes.recipe import list_recipes
from benchmarks.recipes.runner import recipe_command
from benchmarks.registry import describe, get_benchmark, list_benchmarks
from benchmarks.report import write_report
from benchmarks.scale_bench import STEPS as SCALE_STEPS
from store.cli import positive_float, positive_int, run_command

DEFAULT_REPORT = Path(__file__).resolve().parent / "REPORT.md"


def gpu_name() -> str | None:
    """The CUDA device torch sees, or None."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def describe_machine() -> str:
    """``CPU: ...; cores: ...; RAM: ...; GPU: ...; Python ...; torch ...; ...`` for this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    ram = "unknown"
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kb = next(int(ln.split()[1]) for ln in f if ln.startswith("MemTotal:"))
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dists = metadata.packages_distributions()
    versions = []
    for module in ("torch", "faiss", "zarr", "xgboost", "numpy"):
        dist = (dists.get(module) or [module])[0]
        try:
            versions.append(f"{module} {metadata.version(dist)}" + (f" ({dist})" if dist != module else ""))
        except metadata.PackageNotFoundError:
            versions.append(f"{module} not installed")
    return "; ".join([f"CPU: {cpu}", f"cores: {os.cpu_count()} ({usable} usable)", f"RAM: {ram}",
                      f"GPU: {gpu_name() or 'none'}", f"Python {platform.python_version()}", *versions])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="benchmarks: " + "; ".join(f"{n}: {describe(n)}" for n in list_benchmarks()))
    ap.add_argument("--only", action="append", choices=list_benchmarks(), help="run only this benchmark (repeatable)")
    ap.add_argument("--recipe", action="append", choices=list_recipes(),
                    help="run this challenge recipe end to end on the demo set and print its table (repeatable)")
    ap.add_argument("--tiny", action="store_true", help="with --recipe: smoke-test size (40 videos of 1 s, 1-2 epochs)")
    ap.add_argument("--no-recipes", action="store_true", help="a run of everything without the recipes")
    ap.add_argument("--require-gpu", action="store_true",
                    help="gpu: exit 1 when torch sees no CUDA GPU (default: say so in one line, skip it, exit 0)")
    ap.add_argument("--json", type=Path, help="write this run's metrics as JSON lines to this file")
    ap.add_argument("--workdir", type=Path, default=Path("benchmarks/_work"),
                    help="scratch directory for generated data; results/ and recipes/ in it feed the report "
                         "(default benchmarks/_work)")
    ap.add_argument("--size", type=positive_int, default=None,
                    help="override the benchmark's main size (rows/vectors/videos)")
    ap.add_argument("--rows", type=positive_int, default=None,
                    help="scale: videos in the synthetic store (default 1,000,000; cached per size in the workdir)")
    ap.add_argument("--steps", type=_scale_steps, default=None,
                    help=f"scale: only these comma-separated steps (default all: {','.join(SCALE_STEPS)})")
    ap.add_argument("--max-rss-gb", type=positive_float, default=16.0,
                    help="scale: kill a step whose resident memory passes this (default 16)")
    ap.add_argument("--report", type=Path, default=DEFAULT_REPORT,
                    help="the Markdown report to write; plots go to report/ beside it (default benchmarks/REPORT.md)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--no-report", action="store_true", help="run all benchmarks without writing the report")
    mode.add_argument("--report-only", action="store_true",
                      help="write the report from the saved results in <workdir>/results/ and run nothing")
    return ap


def _scale_steps(text: str) -> list[str]:
    steps = [s for s in text.split(",") if s]
    unknown = sorted(set(steps) - set(SCALE_STEPS))
    if not steps or unknown:
        raise argparse.ArgumentTypeError(f"unknown step(s) {', '.join(unknown) or '(none)'}; "
                                         f"choose from {', '.join(SCALE_STEPS)}")
    return steps


def _command(argv: list[str] | None) -> str:
    return shlex.join(["python", "-m", "benchmarks.run", *(sys.argv[1:] if argv is None else argv)])


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _json_default(obj: Any) -> Any:
    """numpy scalars and arrays (and anything with ``tolist``) as plain JSON."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def results_dir(workdir: Path) -> Path:
    return workdir / "results"


def save_result(workdir: Path, name: str, metrics: dict[str, Any], *, seconds: float, command: str,
                machine: str, gpu: str | None) -> Path:
    """Write ``<workdir>/results/<name>.json``: the metrics with when, how and where they were measured."""
    path = results_dir(workdir) / f"{name}.json"
    _write_json(path, {"benchmark": name, "description": describe(name), "date": _now(), "command": command,
                       "machine": machine, "gpu": gpu, "seconds": seconds, "metrics": metrics})
    return path


def save_failure(workdir: Path, name: str, error: BaseException, *, command: str, machine: str,
                 gpu: str | None) -> Path:
    """Mark ``<name>.json`` with the crash of its latest try, keeping the figures of the run before."""
    path = results_dir(workdir) / f"{name}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        record = {"benchmark": name, "description": describe(name), "date": None, "command": command,
                  "machine": machine, "gpu": gpu, "metrics": {}}
    record["last_failure"] = {"date": _now(), "command": command, "error": f"{type(error).__name__}: {error}"}
    _write_json(path, record)
    return path


def load_results(workdir: Path) -> dict[str, dict[str, Any]]:
    """Every saved result record in ``<workdir>/results/``, by benchmark name."""
    out = {}
    for path in sorted(results_dir(workdir).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            print(f"   skipping {path}: {err}", file=sys.stderr)
            continue
        out[record.get("benchmark", path.stem)] = record
    return out


def load_recipes(workdir: Path) -> dict[str, str]:
    """``<workdir>/recipes/<name>/RESULT.md`` by recipe name (not the ``--tiny`` smoke runs)."""
    return {p.parent.name: p.read_text(encoding="utf-8") for p in sorted((workdir / "recipes").glob("*/RESULT.md"))
            if not p.parent.name.endswith("_tiny")}


def write_suite_report(args: argparse.Namespace, command: str, machine: str) -> Path:
    """REPORT.md (and its plots) from the saved results and recipes of ``args.workdir``."""
    results = load_results(args.workdir)
    out = write_report(results, args.report, machine=machine, recipes=load_recipes(args.workdir), command=command)
    print(f"\nwrote {out} ({len(results)} benchmark result(s) from {results_dir(args.workdir)})")
    return out


def run_benchmarks(args: argparse.Namespace, command: str, machine: str, names: list[str]) -> int:
    """Run the ``names`` benchmarks, saving each one's result as it finishes; 1 if any crashed."""
    gpu = gpu_name()
    print(f"machine: {machine}")
    results, failed = [], []
    for name in names:
        print(f"\n== {name}: {describe(name)}", flush=True)
        t0 = time.perf_counter()
        try:
            metrics = get_benchmark(name)(args)
        except Exception as err:  # one crashed benchmark must not cost the others their run
            traceback.print_exc()
            path = save_failure(args.workdir, name, err, command=command, machine=machine, gpu=gpu)
            print(f"   {name} FAILED after {time.perf_counter() - t0:.0f} s: {type(err).__name__}: {err} "
                  f"(noted in {path})")
            failed.append(name)
            continue
        seconds = time.perf_counter() - t0
        path = save_result(args.workdir, name, metrics, seconds=seconds, command=command, machine=machine, gpu=gpu)
        print(f"   ({seconds:.0f} s; saved {path})")
        results.append({"benchmark": name, "metrics": metrics})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r, default=_json_default) + "\n" for r in results))
        print(f"\nwrote {args.json}")
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


@run_command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command, machine = _command(argv), describe_machine()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        write_suite_report(args, command, machine)
        return 0
    if args.recipe:
        return run_recipes(args, args.recipe)
    names = args.only or list_benchmarks()
    if "gpu" in names and gpu_name() is None:  # the GPU check on a machine without one: one line
        if args.require_gpu:
            print(f"error: {NO_GPU.removeprefix('gpu: ').split(';')[0]} and --require-gpu was given", file=sys.stderr)
            return 1
        print(NO_GPU)
        names = [n for n in names if n != "gpu"]
        if args.only and not names:
            return 0
    status = run_benchmarks(args, command, machine, names) if names else 0
    if not args.only and not args.no_recipes:
        status = max(status, run_recipes(args, list_recipes()))
    if not args.only and not args.no_report:
        write_suite_report(args, command, machine)
    return status


def run_recipes(args: argparse.Namespace, names: list[str]) -> int:
    """Run (or resume) each recipe in ``<workdir>/recipes/``; the worst exit status."""
    status = 0
    for name in names:
        print(f"\n== recipe {name}", flush=True)
        status = max(status, recipe_command(name, args.workdir, tiny=args.tiny, progress=False))
    return status


if __name__ == "__main__":
    sys.exit(main())
