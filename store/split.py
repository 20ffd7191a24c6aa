"""``python -m store.split STORE``: assign train/val/test splits to the videos of an existing store.

A store built from a list without a split column holds only ``unsplit`` rows, which
``heads.train`` cannot use. Either split at random::

    python -m store.split my.zarr --fractions 0.7,0.15,0.15 --seed 0     # train,val,test

or take the splits from a file with the header ``id,split`` (rows it does not list keep
their split)::

    python -m store.split my.zarr --from-file splits.csv

Random counts: N * fraction rounded down for each split, then the rows left over go one each
to the splits with the largest remainders (ties: the split listed first), so the counts sum
to N and each is within one of N * fraction. The rows of each split are a seeded random
permutation of the store's rows (numpy ``default_rng(seed)``): the same store and seed give
the same splits. Rows that already have a split (anything but ``unsplit`` or empty) are only
changed with ``--force``. The split column is replaced as a whole, crash-safely: a crash
leaves every row's old split or every row's new one.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from store.cli import non_negative_int, run_command
from store.errors import StoreError
from store.feature_store import FeatureStore

UNSPLIT = ("", "unsplit")
DEFAULT_NAMES = ("train", "val", "test")


def split_counts(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Rows per split: floors of ``n * fraction``, the remainder to the largest fractional parts."""
    f = np.asarray(fractions, dtype=np.float64)
    exact = n * f / f.sum()  # normalised: a sum of 1 +- rounding never over- or under-fills
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")  # largest remainder first; ties: listed first
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def random_splits(n: int, fractions: Sequence[float], names: Sequence[str], seed: int) -> np.ndarray:
    """``(n,)`` split names: ``split_counts`` rows each, over a seeded permutation of the rows."""
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(n, dtype=object)
    for name, rows in zip(names, np.split(order, np.cumsum(split_counts(n, fractions))[:-1])):
        out[rows] = name
    return out


def read_split_file(path: Path, ids: np.ndarray) -> dict[int, str]:
    """Row -> split from a CSV with the header ``id,split``; every id must be in the store."""
    if not path.is_file():
        raise StoreError(f"split file {path} not found")
    lookup = {str(v): i for i, v in enumerate(ids)}
    out: dict[int, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = None
        unknown: list[tuple[int, str]] = []
        for fields in reader:
            fields = [x.strip() for x in fields]
            if not any(fields):
                continue
            if header is None:
                header = [x.lower() for x in fields]
                if header[:2] != ["id", "split"]:
                    raise StoreError(f"{path}:{reader.line_num}: expected the header 'id,split', "
                                     f"got {','.join(fields)!r}")
                continue
            if len(fields) != 2 or not fields[1]:
                raise StoreError(f"{path}:{reader.line_num}: expected 'id,split', got {','.join(fields)!r}")
            if fields[0] not in lookup:
                unknown.append((reader.line_num, fields[0]))
                continue
            row = lookup[fields[0]]
            if row in out:
                raise StoreError(f"{path}:{reader.line_num}: video {fields[0]!r} is listed twice")
            out[row] = fields[1]
    if unknown:
        line, vid = unknown[0]
        raise StoreError(f"{path}:{line}: {len(unknown)} id(s) not in the store, e.g. {vid!r}; "
                         "list the store's ids (python -m store.info shows where they come from)")
    if not out:
        raise StoreError(f"{path} lists no videos; expected the header 'id,split' and one row per video")
    return out


def _fractions(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if any(not v > 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"fractions must be greater than 0 and sum to 1, got {text}")
    return values


@run_command(path_errors=True)
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m store.split", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="the NAME.zarr store directory")
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--fractions", type=_fractions, metavar="F1,F2,...",
                     help="random splits with these fractions of the rows (summing to 1), e.g. 0.7,0.15,0.15")
    how.add_argument("--from-file", type=Path, metavar="CSV", help="splits from a CSV with the header id,split")
    ap.add_argument("--names", default=",".join(DEFAULT_NAMES),
                    help="split names for --fractions, in the same order (default: train,val,test)")
    ap.add_argument("--seed", type=non_negative_int, default=0, help="random seed for --fractions (default 0)")
    ap.add_argument("--force", action="store_true", help="replace splits the store already has")
    args = ap.parse_args(argv)
    names = [x.strip() for x in args.names.split(",")]
    if args.fractions is not None and (len(names) != len(args.fractions) or len(set(names)) != len(names)
                                       or any(n in UNSPLIT for n in names)):
        ap.error(f"--names: give {len(args.fractions)} distinct, non-empty names other than 'unsplit', "
                 "one per fraction")
    fs = FeatureStore.open(args.store, "a")
    current = fs.videos(["split"])["split"].to_numpy(dtype=object)
    if args.fractions is not None:
        new = random_splits(fs.n_videos, args.fractions, names, args.seed)
    else:
        new = current.copy()
        for row, split in read_split_file(args.from_file, fs.video_ids()).items():
            new[row] = split
    changed = (new != current) & ~np.isin(current, UNSPLIT)
    if changed.any() and not args.force:
        raise StoreError(f"{int(changed.sum())} video(s) already have another split; pass --force to "
                         "replace the store's splits")
    fs.set_splits(new)
    values, counts = np.unique(new.astype(str), return_counts=True)
    print(f"{fs.path}: " + ", ".join(f"{v or '(none)'} {c}" for v, c in zip(values, counts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
