"""``python -m fusion.run``: fuse prediction runs of a store, write the fused run and a report.

Examples::

    # out-of-fold stacking: inputs trained with heads.train --folds k, stacker fitted on train
    python -m fusion.run --store demo.zarr --runs rgb flow audio --method xgboost --report runs/fusion
    # held-out stacking: inputs trained on train only, stacker fitted on val, scored on test
    python -m fusion.run --store demo.zarr --runs rgb flow audio --fit-split val --eval-split test
    # xgboost over a Dask cluster
    python -m fusion.run --store demo.zarr --runs rgb flow audio --scheduler tcp://10.0.0.1:8786
    python -m fusion.run --store demo.zarr --runs rgb flow audio --cluster local

Every other registered method is fitted beside ``--method`` for comparison (``--compare``
with no names: none). Inputs that would leak are refused with one line and exit status 2.
Method settings: the flags below, or ``--config file.toml`` with one table per method
(``[xgboost]``, ``[weighted]``, ``[logistic]``; keys = the fields of their settings).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fusion.errors import FusionError
from fusion.pipeline import DEFAULT_FIT_ROWS, METRIC_NAMES, fuse_runs
from fusion.registry import list_fusions
from fusion.report import HEADERS, write_report
from store.cli import non_negative_int, positive_float, positive_int, run_command
from store.cluster import CLUSTERS, connect
from store.malloc import raise_malloc_thresholds
from store.threads import add_threads_argument, set_threads

# flag -> (method, settings field)
_FLAG_SETTINGS = {"device": ("xgboost", "device"), "threads": ("xgboost", "n_jobs"), "seed": ("xgboost", "seed"),
                  "max_depth": ("xgboost", "max_depth"), "rounds": ("xgboost", "n_rounds"),
                  "learning_rate": ("xgboost", "learning_rate"), "other_scores": ("xgboost", "other_scores"),
                  "logistic_c": ("logistic", "c")}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m fusion.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, type=Path, help="the feature store (NAME.zarr)")
    ap.add_argument("--runs", required=True, nargs="+", metavar="RUN", help="input prediction runs")
    ap.add_argument("--method", default="xgboost", choices=list_fusions(), help="method written as the fused run")
    ap.add_argument("--compare", nargs="*", default=None, choices=list_fusions(), metavar="METHOD",
                    help="methods scored beside it for the report (default: every other method)")
    ap.add_argument("--fit-split", default="train",
                    help="split the stacker fits on (train needs out-of-fold inputs; default train)")
    ap.add_argument("--eval-split", default="test", help="split everything is scored on (default test)")
    ap.add_argument("--fit-rows", type=non_negative_int, default=DEFAULT_FIT_ROWS, metavar="N",
                    help=f"fit on a seeded sample of at most N fit rows, recorded in the run's attrs "
                         f"(0: all; default {DEFAULT_FIT_ROWS:,})")
    ap.add_argument("--out", default=None, help="name of the fused run (default fused_<method>)")
    ap.add_argument("--no-write", action="store_true", help="do not write the fused run into the store")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing fused run of that name")
    ap.add_argument("--report", type=Path, default=None, help="write report.md and PNG plots into this folder")
    ap.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://...): xgboost.dask training")
    ap.add_argument("--cluster", choices=CLUSTERS, default=None,
                    help="start a Dask cluster for xgboost.dask training: local, cuda (one worker per GPU) or slurm "
                         "(--slurm FILE.toml; store/cluster.py)")
    ap.add_argument("--slurm", type=Path, default=None, metavar="FILE.toml", help="the cluster of --cluster slurm")
    ap.add_argument("--config", type=Path, default=None, help="TOML file with [xgboost]/[weighted]/[logistic] settings")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="xgboost device (default auto)")
    add_threads_argument(ap, "--n-jobs", help="threads of xgboost, the logistic stacker's row blocks, OpenMP and BLAS "
                         "(default: the free cores, measured when the command starts; "
                         "--n-jobs is the old spelling)")
    ap.add_argument("--seed", type=non_negative_int, default=None, help="xgboost seed (default 0)")
    ap.add_argument("--max-depth", type=positive_int, default=None, help="xgboost tree depth (default 3)")
    ap.add_argument("--rounds", type=positive_int, default=None, help="xgboost most rounds per class (default 200)")
    ap.add_argument("--learning-rate", type=positive_float, default=None, help="xgboost eta (default 0.1)")
    ap.add_argument("--other-scores", type=int, default=None,
                    help="other (run, class) scores per class for the trees; -1 all (default 8)")
    ap.add_argument("--logistic-c", type=positive_float, default=None,
                    help="inverse L2 strength of the logistic stacker")
    ap.add_argument("--weighted-per-class", action="store_true", help="fit one weight vector per class")
    ap.add_argument("-v", "--verbose", action="store_true", help="log progress of the library")
    return ap


def method_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Method name -> settings dict, from ``--config`` then the flags."""
    settings: dict[str, dict[str, Any]] = {}
    if args.config is not None:
        try:
            loaded = tomllib.loads(args.config.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise FusionError(f"cannot read --config {args.config}: {exc}") from None
        unknown = sorted(set(loaded) - set(list_fusions()))
        if unknown:
            raise FusionError(f"--config has table(s) {', '.join(unknown)}; tables are method names: "
                              f"{', '.join(list_fusions())}")
        settings = {k: dict(v) for k, v in loaded.items()}
    for flag, (method, field) in _FLAG_SETTINGS.items():
        if getattr(args, flag) is not None:
            settings.setdefault(method, {})[field] = getattr(args, flag)
    if args.weighted_per_class:
        settings.setdefault("weighted", {})["per_class"] = True
    return settings


@run_command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    compare = [m for m in list_fusions() if m != args.method] if args.compare is None else args.compare
    out = None if args.no_write else (args.out or f"fused_{args.method}")
    bars = []
    n_methods = len(dict.fromkeys([args.method, *compare]))

    def on_method(name: str) -> None:  # called before each method is fitted, after the inputs were accepted
        if not bars:
            bars.append(tqdm(total=n_methods, desc="fusion", unit="method", leave=False))
        else:
            bars[0].update(1)
        bars[0].set_postfix_str(name)

    stack = contextlib.ExitStack()
    try:
        settings = method_settings(args)
        set_threads(args.threads)
        raise_malloc_thresholds()  # the stackers' row blocks reuse freed heap instead of faulting pages in
        dask = connect(args.scheduler, args.cluster, slurm=args.slurm) if args.scheduler or args.cluster else None
        client = stack.enter_context(dask) if dask is not None else None
        result = fuse_runs(args.store, args.runs, method=args.method, compare=compare, fit_split=args.fit_split,
                           eval_split=args.eval_split, settings=settings, client=client, write_as=out,
                           overwrite=args.overwrite, on_method=on_method, fit_rows=args.fit_rows)
        for bar in bars:
            bar.close()
        report = write_report(result, args.report) if args.report is not None else None
    finally:  # a VideoFeatError goes on to run_command: one line, exit 2
        for bar in bars:
            bar.close()
        stack.close()
    table = result.metrics_table()
    sampled = len(result.fit_rows) < len(result.plan.fit_rows)
    print(f"evaluated on {result.plan.eval_split} ({len(result.plan.eval_rows)} rows), "
          f"fitted on {result.plan.fit_split or 'nothing'} ({len(result.fit_rows)} "
          + (f"sampled of {len(result.plan.fit_rows)} rows)" if sampled else "rows)"))
    print(f"{'':14s}" + "".join(f"{HEADERS[k]:>12s}" for k in METRIC_NAMES) + f"{'fit s':>8s}")
    for name, row in table.iterrows():
        fit = "" if row["kind"] == "input" else f"{row['fit_s']:8.1f}"
        print(f"{name:14s}" + "".join(f"{100 * row[k]:12.2f}" for k in METRIC_NAMES) + fit)
    if out:
        print(f"fused run written: {out}")
    if report is not None:
        print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
