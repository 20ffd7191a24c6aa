"""``python -m heads.train``: train one head on cached features and write its predictions.

Example::

    python -m heads.train --store demo.zarr --features rgb_r18 --features audio \\
        --head nextvlad --head-arg num_clusters=32 --loss focal_lc --epochs 20 --swa ema --folds 5

Writes ``--out DIR`` (default ``runs/<run name>/``): checkpoint.pt, config.json, metrics.json,
and the prediction run ``<run name>`` (sigmoid scores of every row) into the store. Settings
come from, in rising priority: TrainConfig's defaults, ``--config FILE.toml`` (keys: the
TrainConfig fields, plus ``store``, ``out``, ``run_name``), the flags. An interrupted run
continues with the same command plus ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from pathlib import Path
from typing import Any

from heads._train_data import TrainError
from heads.losses import list_losses
from heads.registry import list_heads
from heads.trainer import TrainConfig, train_head
from store.cli import non_negative_int, positive_float, positive_int, run_command
from store.threads import add_threads_argument, set_threads

_FILE_KEYS = ("store", "out", "run_name")
_METRIC_COLUMNS = (("class_map", "class mAP"), ("sample_map", "sample mAP"), ("gap20", "GAP@20"),
                   ("top1", "top-1"), ("top5", "top-5"))


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (``16``, ``true``, ``null``), else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m heads.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", type=Path, help="the feature store (NAME.zarr)")
    ap.add_argument("--features", action="append", metavar="SET",
                    help="feature set to train on; repeat to concatenate sets per clip (same K)")
    ap.add_argument("--config", type=Path, metavar="FILE.toml", help="TOML file of defaults (TrainConfig fields)")
    ap.add_argument("--out", type=Path, metavar="DIR", help="run directory (default runs/<run name>/)")
    ap.add_argument("--run-name", help="prediction run name (default <head>-<loss>-<sets>-<config hash>)")
    ap.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    ap.add_argument("--no-predictions", action="store_true", help="do not write the prediction run to the store")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_argument(ap)
    g = ap.add_argument_group("TrainConfig (defaults in heads/trainer.py)")
    g.add_argument("--head", help=f"one of: {', '.join(list_heads())}")
    g.add_argument("--head-arg", action="append", type=_key_value, metavar="KEY=VALUE", dest="head_kwargs",
                   help="a keyword of the head builder, e.g. num_clusters=32 classifier=moe (repeat)")
    g.add_argument("--loss", help=f"one of: {', '.join(list_losses())}")
    g.add_argument("--loss-arg", action="append", type=_key_value, metavar="KEY=VALUE", dest="loss_kwargs",
                   help="a keyword of the loss, e.g. gamma=2 (repeat)")
    g.add_argument("--optimizer", choices=("adam", "adamw"))
    g.add_argument("--lr", type=positive_float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--warmup", type=float, help="epochs of linear warm-up")
    g.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=None, help="cosine decay after warm-up")
    g.add_argument("--grad-clip", type=float, help="max gradient norm (0: off)")
    g.add_argument("--dropout", type=float)
    g.add_argument("--mixup-alpha", type=float, help="feature-space mixup Beta(a, a) (0: off)")
    g.add_argument("--patience", type=non_negative_int, help="early stopping on val class mAP (0: off)")
    g.add_argument("--swa", choices=("none", "swa", "ema"))
    g.add_argument("--swa-start", type=non_negative_int, help="first averaged epoch")
    g.add_argument("--ema-decay", type=float)
    g.add_argument("--seed", type=non_negative_int)
    g.add_argument("--folds", type=non_negative_int, help="k >= 2: out-of-fold predictions for the train rows")
    g.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    g.add_argument("--class-weights", choices=("none", "sqrt", "linear"))
    g.add_argument("--reader", choices=("auto", "memory", "stream"))
    return ap


def resolve(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """Merge defaults < TOML < flags into a TrainConfig and the file settings (store, out, run_name)."""
    values: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise TrainError(f"config file {args.config} not found")
        try:
            values = tomllib.loads(args.config.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise TrainError(f"{args.config} is not valid TOML: {exc}") from None
    files = {k: values.pop(k, None) for k in _FILE_KEYS}
    fields = set(TrainConfig.__dataclass_fields__)
    for name in fields:
        flag = getattr(args, name, None)
        if flag is not None:
            values[name] = dict(flag) if name.endswith("_kwargs") else flag
    for key, flag in (("store", args.store), ("out", args.out), ("run_name", args.run_name)):
        if flag is not None:
            files[key] = flag
    if not values.get("features"):
        raise TrainError("give at least one --features SET (or features = [...] in --config)")
    if files["store"] is None:
        raise TrainError("give --store PATH (or store = \"...\" in --config)")
    return TrainConfig.from_dict(values), files


def summary(result: Any) -> str:
    """The printed table: one row per evaluated split, then speed and where things went."""
    m = result.metrics
    t = m["timing"]
    lines = [(f"run {result.run_name}  ({m['reader']} reader, {m['device']}, {t['epochs']} epochs, "
              f"{t['rows_per_s']:,.0f} rows/s, data wait {100 * t['data_wait_fraction']:.1f}%)"),
             f"{'split':<12}" + "".join(f"{title:>12}" for _, title in _METRIC_COLUMNS)]
    for split, title in (("val", "val"), ("test", "test"), ("train_oof", "train (OOF)")):
        if m.get(split):
            lines.append(f"{title:<12}" + "".join(f"{m[split][key]:>12.4f}" for key, _ in _METRIC_COLUMNS))
    if m["rows"]["missing"]:
        lines.append(f"{m['rows']['missing']} row(s) not done in the feature set(s) got score 0")
    return "\n".join(lines)


@run_command(interrupted="continue with the same command and --resume")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config, files = resolve(args)
    run_name = files["run_name"] or config.default_run_name()
    out = Path(files["out"]) if files["out"] else Path("runs") / run_name
    result = train_head(files["store"], config, run_name=run_name, out_dir=out, resume=args.resume,
                        write_predictions=not args.no_predictions, progress=not args.quiet)
    print(summary(result))
    where = "" if args.no_predictions else f"prediction run '{run_name}' in {files['store']}; "
    print(f"wrote {where}run directory {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
