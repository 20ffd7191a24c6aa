"""``python -m store.export STORE.zarr --to npy|h5|parquet OUT``: a feature set or run for other tools.

::

    python -m store.export demo.zarr --to npy feats/                 # the store's only feature set
    python -m store.export demo.zarr --to h5 rgb.h5 --features rgb_r18
    python -m store.export demo.zarr --to parquet rgb.parquet --features rgb_r18
    python -m store.export demo.zarr --to npy scores/ --run nextvlad_rgb

A feature set leaves with only its valid clips per video (``(K_valid, D)``, the storage dtype,
float16 by default) and their start/end times; rows not done are skipped and counted. It is
read and written one storage chunk at a time (never the whole set in memory) and resumable:
a rerun skips the chunks a progress record lists as finished. A prediction run leaves as one
``(n, C)`` float32 score matrix with the ids beside it. Layouts: ``store/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from store._exchange import (
    Progress,
    ProgressRecord,
    atomic_file,
    encode_id,
    jsonable,
    no_progress,
    temp_name,
    write_json,
)
from store._export_formats import WRITERS, Block
from store.cli import run_command
from store.errors import StoreError
from store.feature_set import FeatureSet
from store.feature_store import LABEL_CHUNK, FeatureStore

log = logging.getLogger(__name__)

FORMATS = tuple(WRITERS)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ExportSummary:
    """What an export did.

    Attributes:
        out: Where it went.
        written: Videos (or score rows) written by this call.
        earlier: Videos already written by an interrupted earlier call (skipped).
        not_done: Videos without features in the store (skipped).
    """

    out: Path
    written: int
    earlier: int
    not_done: int


def choose_source(fs: FeatureStore, features: str | None, run: str | None) -> tuple[str, str]:
    """``("features", name)`` or ``("run", name)``; the only feature set when neither is given."""
    if features and run:
        raise StoreError("give --features or --run, not both")
    if run:
        fs.prediction_attrs(run)  # raises PredictionRunNotFound listing the runs
        return "run", run
    if features:
        fs.feature_set(features)  # raises FeatureSetNotFound listing the sets
        return "features", features
    sets = fs.feature_sets()
    if len(sets) == 1:
        return "features", sets[0]
    if not sets:
        runs = ", ".join(fs.prediction_runs()) or "none"
        raise StoreError(f"{fs.path} holds no feature set; export a prediction run with --run (runs: {runs})")
    raise StoreError(f"{fs.path} holds {len(sets)} feature sets ({', '.join(sets)}); choose one with --features")


def _check_out(fmt: str, out: Path) -> None:
    if fmt not in WRITERS:
        raise StoreError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "npy" and out.exists() and not out.is_dir():
        raise StoreError(f"{out} is a file; --to npy writes a folder")
    if fmt != "npy" and out.is_dir():
        raise StoreError(f"{out} is a folder; --to {fmt} writes one file")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _label_names(classes: list[str], labels: np.ndarray) -> list[str]:
    return [";".join(classes[c] for c in np.flatnonzero(row)) for row in labels]


def _index_rows(fs: FeatureStore, fset: FeatureSet) -> Iterator[dict[str, Any]]:
    """One record per done row (id, path, split, labels, n_clips), read a chunk at a time."""
    vg, classes = fs.root["videos"], fs.classes
    for c in range(fset.n_chunks):
        start, stop = c * fset.chunk_rows, min((c + 1) * fset.chunk_rows, fset.n_rows)
        done = np.asarray(fset.arrays["done"][start:stop], dtype=bool)
        if not done.any():
            continue
        n_clips = np.asarray(fset.arrays["valid"][start:stop], dtype=bool).sum(1)
        cols = {k: np.asarray(vg[k][start:stop]).astype(object) for k in ("id", "path", "split")}
        labels = _label_names(classes, fs.labels(np.arange(start, stop)))
        for i in np.flatnonzero(done):
            yield {"id": str(cols["id"][i]), "path": str(cols["path"][i]), "split": str(cols["split"][i]),
                   "labels": labels[i], "n_clips": int(n_clips[i])}


def export_features(fs: FeatureStore, name: str, fmt: str, out: str | os.PathLike, *,
                    progress: Progress = no_progress) -> ExportSummary:
    """Export feature set ``name`` to ``out`` in format ``fmt`` (``npy``, ``h5`` or ``parquet``).

    Resumable: chunks recorded as finished by an interrupted call with the same source and
    output are skipped; anything half-written is redone.

    Args:
        fs: The store.
        name: Feature set.
        fmt: Output format.
        out: Folder (``npy``) or file (``h5``, ``parquet``).
        progress: Wraps the chunk loop (e.g. ``tqdm``).
    """
    out = Path(out)
    _check_out(fmt, out)
    fset = fs.feature_set(name)
    attrs = jsonable({"format_version": FORMAT_VERSION, "store": str(fs.path.resolve()), "feature_set": name,
                      "classes": fs.classes, "set_attrs": fset.attrs, "exported": _now(),
                      "id_encoding": "percent-encoded ids, see store/README.md"})
    writer = WRITERS[fmt](out, attrs)
    done = fset.done()
    record = ProgressRecord(writer.progress_path, {
        "format": fmt, "store": str(fs.path.resolve()), "feature_set": name, "fingerprint": fset.attrs["fingerprint"],
        "created": fset.attrs.get("created"), "rows": fset.n_rows, "done": int(done.sum())})
    resume = record.load()
    ids = fs.video_ids()
    c_rows = fset.chunk_rows
    finished = {encode_id(ids[r]) for c in record.finished
                for r in range(c * c_rows, min((c + 1) * c_rows, fset.n_rows)) if done[r]}
    if not writer.start(resume, finished):
        record.finished = set()
    earlier = sum(int(done[c * c_rows:(c + 1) * c_rows].sum()) for c in record.finished)
    record.save()
    written = 0
    for c in progress(range(fset.n_chunks), desc=f"export {name}", unit="chunk"):
        start, stop = c * c_rows, min((c + 1) * c_rows, fset.n_rows)
        if c in record.finished:
            continue
        if done[start:stop].any():
            block = Block(c, start, ids[start:stop], done[start:stop], fset.read_data_chunk(c),
                          np.asarray(fset.arrays["valid"][start:stop], dtype=bool), fset.read_times(slice(start, stop)))
            n = writer.write(block)
            written += n
            earlier += int(done[start:stop].sum()) - n
        record.mark(c)
    writer.finish(_index_rows(fs, fset))
    record.remove()
    not_done = int(fset.n_rows - done.sum())
    log.info("exported %d videos of %s to %s (%d earlier, %d without features)", written, name, out, earlier, not_done)
    return ExportSummary(out, written, earlier, not_done)


def export_run(fs: FeatureStore, run: str, fmt: str, out: str | os.PathLike, *,
               progress: Progress = no_progress) -> ExportSummary:
    """Export prediction run ``run``: its ``(n, C)`` float32 scores with the video ids.

    ``npy``: ``OUT/scores.npy`` + ``OUT/index.csv`` (id, path, split, labels, row) + ``attrs.json``;
    ``h5``: datasets ``/scores`` and ``/ids``; ``parquet``: one row per video (``id``, ``scores``).
    Written in blocks of rows to a temporary name and renamed when complete (a rerun starts over).
    """
    out = Path(out)
    _check_out(fmt, out)
    attrs = jsonable({"format_version": FORMAT_VERSION, "store": str(fs.path.resolve()), "run": run,
                      "classes": fs.classes, "run_attrs": fs.prediction_attrs(run), "exported": _now()})
    scores = fs.root["predictions"][run]["scores"]
    n, n_classes = fs.prediction_rows(run), len(fs.classes)
    ids = fs.video_ids()[:n].astype(str)
    blocks = progress(range(0, n, LABEL_CHUNK), desc=f"export {run}", unit="block")
    if fmt == "npy":
        out.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(out / "scores.npy")
        m = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, n_classes))
        for a in blocks:
            m[a:a + LABEL_CHUNK] = scores[a:a + LABEL_CHUNK]
        m.flush()
        del m
        os.replace(tmp, out / "scores.npy")
        write_json(out / "attrs.json", attrs)
        vg = fs.root["videos"]
        with atomic_file(out / "index.csv", "w") as f:
            w = csv.writer(f)
            w.writerow(["id", "path", "split", "labels", "row"])
            for a in range(0, n, LABEL_CHUNK):
                b = min(a + LABEL_CHUNK, n)
                paths, splits = (np.asarray(vg[k][a:b]).astype(object) for k in ("path", "split"))
                labels = _label_names(fs.classes, fs.labels(np.arange(a, b)))
                w.writerows(zip(ids[a:b], paths, splits, labels, range(a, b)))
    elif fmt == "h5":
        import h5py

        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_name(out)
        with h5py.File(tmp, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = json.dumps(v)
            f.create_dataset("ids", data=ids.astype(object), dtype=h5py.string_dtype())
            d = f.create_dataset("scores", shape=(n, n_classes), dtype="float32")
            for a in blocks:
                d[a:a + LABEL_CHUNK] = scores[a:a + LABEL_CHUNK]
        os.replace(tmp, out)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out.parent.mkdir(parents=True, exist_ok=True)
        schema = pa.schema([("id", pa.string()), ("scores", pa.list_(pa.float32(), n_classes))],
                           metadata={"videofeat": json.dumps(attrs)})
        tmp = temp_name(out)
        with pq.ParquetWriter(tmp, schema) as w:
            for a in blocks:
                s = np.asarray(scores[a:a + LABEL_CHUNK], dtype=np.float32)  # (b, C)
                w.write_table(pa.table({"id": pa.array(ids[a:a + LABEL_CHUNK]), "scores": pa.FixedSizeListArray
                                        .from_arrays(pa.array(s.reshape(-1)), n_classes)}, schema=schema))
        os.replace(tmp, out)
    return ExportSummary(out, n, 0, 0)


@run_command(path_errors=True)  # OSError: an unwritable or unreadable path
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m store.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="the NAME.zarr store")
    ap.add_argument("--to", required=True, choices=FORMATS, help="output format")
    ap.add_argument("out", help="output folder (npy) or file (h5, parquet)")
    ap.add_argument("--features", help="feature set to export (default: the store's only one)")
    ap.add_argument("--run", help="prediction run to export instead of a feature set")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from tqdm import tqdm

    fs = FeatureStore.open(args.store, "r")
    kind, name = choose_source(fs, args.features, args.run)
    export = export_features if kind == "features" else export_run
    s = export(fs, name, args.to, args.out, progress=tqdm)
    what = "videos" if kind == "features" else "score rows"
    print(f"exported {s.written} {what} of {name} to {s.out}"
          + (f"; {s.earlier} were written by an earlier, interrupted run" if s.earlier else "")
          + (f"; {s.not_done} videos without features skipped" if s.not_done else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
