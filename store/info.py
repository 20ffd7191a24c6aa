"""``python -m store.info PATH``: what a store holds, at a glance; and which rows failed.

``--errors`` lists every row a feature set could not extract (id, path, reason);
``--errors-csv FILE`` writes those videos as a list file that ``extract.run --videos FILE
--retry-errors`` reads back (same ids, so the rows are retried in place, not appended).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from store.cli import non_negative_int, run_command
from store.errors import StoreError
from store.feature_store import FeatureStore


def _disk_bytes(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def describe(path: str | Path, max_classes: int = 20) -> str:
    """A multi-line human summary of the store."""
    fs = FeatureStore.open(path, "r")
    n = fs.n_videos
    lines = [f"store        {fs.path}  (schema v{fs.root.attrs['schema_version']}, "
             f"created {fs.root.attrs.get('created', '?')}, code {fs.root.attrs.get('code_version', '?')})"]
    lines.append(f"videos       {n}")
    if n:
        splits = fs.videos(["split"])["split"].value_counts()
        lines.append("splits       " + ", ".join(f"{k or '(none)'}: {v}" for k, v in splits.items()))
        if "has_audio" in fs.columns:
            lines.append(f"with audio   {int(fs.videos(['has_audio'])['has_audio'].sum())}")
    labels = fs.labels()
    counts = labels.sum(axis=0) if n else np.zeros(len(fs.classes), int)
    lines.append(f"classes      {len(fs.classes)}; labels per video: mean {labels.sum(1).mean() if n else 0:.2f}")
    order = np.argsort(-counts, kind="stable")[:max_classes]
    lines.append("label counts " + ", ".join(f"{fs.classes[i]} {int(counts[i])}" for i in order)
                 + (" ..." if len(fs.classes) > max_classes else ""))
    raw_total, disk_total = 0, 0
    for name in fs.feature_sets():
        fset = fs.feature_set(name)
        sp = fset.spec
        done = fset.done()
        n_err = len(fset.errors())
        # Uncompressed bytes of the chunks on disk, against their size on disk.
        n_chunks = len(list((fset.path / "data" / "c").glob("*"))) if (fset.path / "data" / "c").exists() else 0
        raw_total += min(n_chunks * sp.chunk_rows, n) * sp.clips * sp.dim * np.dtype(sp.dtype).itemsize
        disk = _disk_bytes(fset.path / "data" / "c") if n_chunks else 0
        disk_total += disk
        lines.append(f"features     {name}: ({n}, {sp.clips}, {sp.dim}) {sp.dtype}, backbone {sp.backbone}, "
                     f"modality {sp.modality}, {int(done.sum())}/{n} done ({100 * done.mean() if n else 0:.0f}%), "
                     f"{n_err} errors, {_human(disk)} on disk, compressor {sp.compressor}, "
                     f"{sp.describe_weights()}")
        record = sp.extra.get("weights") or {}
        if record.get("source") and record.get("sha256"):
            lines.append(f"             weights {record.get('name')}: {record['source']}, sha256 {record['sha256']}")
    if not fs.feature_sets():
        lines.append("features     none")
    for run in fs.prediction_runs():
        attrs = fs.prediction_attrs(run)
        metric = attrs.get("metrics", {})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metric.items() if isinstance(v, (int, float)))
        lines.append(f"predictions  {run}: head {attrs.get('head', '?')}" + (f"; {shown}" if shown else ""))
    if not fs.prediction_runs():
        lines.append("predictions  none")
    total = _disk_bytes(fs.path)
    ratio = f", feature compression {raw_total / disk_total:.2f}x" if disk_total and raw_total else ""
    lines.append(f"disk         {_human(total)}{ratio}")
    return "\n".join(lines)


def failed_rows(fs: FeatureStore, features: str | None = None) -> pd.DataFrame:
    """Rows that could not be extracted: one line per (feature set, row), row order within a set.

    Args:
        fs: The store.
        features: Only this feature set (default: every set).

    Returns:
        Columns ``features``, ``row``, ``id``, ``path``, ``split``, ``error``.
    """
    names = [fs.feature_set(features).name] if features else fs.feature_sets()
    table = fs.videos(["id", "path", "split"])
    parts = []
    for name in names:
        errors = fs.feature_set(name).errors()
        rows = np.array(sorted(errors), dtype=np.int64)
        part = table.iloc[rows].reset_index()
        part.insert(0, "features", name)
        part["error"] = [errors[int(r)] for r in rows]
        parts.append(part)
    columns = ["features", "row", "id", "path", "split", "error"]
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def write_retry_list(fs: FeatureStore, failed: pd.DataFrame, path: str | Path) -> int:
    """Write the failed videos (each once) as a table list file ``extract.run --videos`` reads.

    Columns ``path,id,split,labels`` (labels as class names joined by ``;``): the ``id``
    column keeps each video's store id, so a rerun retries the rows in place. The file is
    written to a temporary name and renamed, so it is complete or absent.

    Returns:
        How many videos were written.
    """
    rows = np.unique(failed["row"].to_numpy(dtype=np.int64))
    table = fs.videos(["id", "path", "split"]).iloc[rows]
    labels = fs.labels(rows) if rows.size else np.zeros((0, len(fs.classes)), np.uint8)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["path", "id", "split", "labels"])
            for (vid, vpath, split), hot in zip(table[["id", "path", "split"]].itertuples(index=False), labels):
                out.writerow([vpath, vid, split, ";".join(fs.classes[c] for c in np.flatnonzero(hot))])
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None
    return int(rows.size)


@run_command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m store.info", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="the NAME.zarr store directory")
    ap.add_argument("--classes", type=non_negative_int, default=20,
                    help="how many class counts to list (default 20)")
    ap.add_argument("--errors", action="store_true",
                    help="list the rows that could not be extracted: feature set, id, path, reason")
    ap.add_argument("--errors-csv", metavar="FILE", type=Path,
                    help="write the failed videos as a list file for extract.run --videos FILE --retry-errors")
    ap.add_argument("--features", metavar="SET", help="with --errors / --errors-csv: only this feature set")
    args = ap.parse_args(argv)
    if args.features and not (args.errors or args.errors_csv):
        ap.error("--features needs --errors or --errors-csv")
    if not (args.errors or args.errors_csv):
        print(describe(args.path, args.classes))
        return 0
    fs = FeatureStore.open(args.path, "r")
    failed = failed_rows(fs, args.features)
    if args.errors:
        for r in failed.itertuples(index=False):
            print(f"{r.features}\t{r.id}\t{r.path}\t{' '.join(r.error.split())}")
        print(f"{len(failed)} failed row(s)", file=sys.stderr)
    if args.errors_csv:
        n = write_retry_list(fs, failed, args.errors_csv)
        print(f"wrote {n} video(s) to {args.errors_csv}; retry them with: python -m extract.run "
              f"--videos {args.errors_csv} --store {args.path} --retry-errors "
              "(and the same --backbone flags)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
