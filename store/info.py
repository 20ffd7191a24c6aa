"""``python -m store.info PATH``: what a store holds, at a glance."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from store.cli import non_negative_int, run_command
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
                     f"{n_err} errors, {_human(disk)} on disk, compressor {sp.compressor}"
                     + ("" if sp.weights_sha256 else ", random-init weights"))
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


@run_command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m store.info", description=__doc__)
    ap.add_argument("path", help="the NAME.zarr store directory")
    ap.add_argument("--classes", type=non_negative_int, default=20, help="how many class counts to list (default 20)")
    args = ap.parse_args(argv)
    print(describe(args.path, args.classes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
