"""The three writers behind ``store.export`` for feature sets: ``npy``, ``h5`` and ``parquet``.

Each writer receives the set one storage chunk at a time (:class:`Block`) and writes only its
done rows' valid clips. Everything is written under temporary names and renamed into place:

- ``npy``: ``OUT/ID.npy`` ``(K_valid, D)`` and ``OUT/ID_times.npy`` ``(K_valid, 2)`` per video
  (times first, features last, so a features file means the video is finished), ``attrs.json``
  and, at the end, ``index.csv``.
- ``h5``: written into ``OUT.partial`` (flushed after every chunk) and renamed to ``OUT`` when
  closed; a rerun reopens the partial file, drops the groups of unfinished chunks and goes on,
  or starts over if the partial file cannot be opened or lacks a finished video.
- ``parquet``: one part file per chunk in ``OUT.parts/`` (one row group each), joined into
  ``OUT`` row group by row group at the end; a rerun keeps the finished parts.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from store._exchange import atomic_file, encode_id, save_npy, temp_name, write_json

log = logging.getLogger(__name__)


@dataclass
class Block:
    """One storage chunk of a feature set: rows ``start:start + n`` and what the writers need.

    Attributes:
        chunk: Chunk number.
        start: First row.
        ids: ``(n,)`` video ids.
        done: ``(n,)`` bool, rows with features.
        data: ``(n, K, D)`` features in the storage dtype.
        valid: ``(n, K)`` bool clip mask.
        times: ``(n, K, 2)`` float32 clip start/end seconds (NaN if unknown).
    """

    chunk: int
    start: int
    ids: np.ndarray
    done: np.ndarray
    data: np.ndarray
    valid: np.ndarray
    times: np.ndarray

    def videos(self) -> list[tuple[int, str, np.ndarray, np.ndarray | None]]:
        """``(row, id, features (K_valid, D), times (K_valid, 2) or None)`` of each done row."""
        out = []
        for i in np.flatnonzero(self.done):
            v = self.valid[i]
            t = self.times[i][v]
            out.append((self.start + int(i), str(self.ids[i]), self.data[i][v], None if np.isnan(t).all() else t))
        return out


class ExportWriter(ABC):
    """Base of the writers: the output path, its progress record's path and the root attrs."""

    suffix_progress = ".progress.json"

    def __init__(self, out: Path, attrs: dict[str, Any]) -> None:
        self.out = out
        self.attrs = attrs  # classes, feature set name, its attrs, source store, format version

    @property
    def progress_path(self) -> Path:
        return self.out.with_name(self.out.name + self.suffix_progress)

    @abstractmethod
    def start(self, resume: bool, finished: set[str]) -> bool:
        """Prepare the output; returns whether the earlier work is kept (else start over).

        Args:
            resume: An earlier, interrupted export of the same source left a progress record.
            finished: Encoded ids of the videos that record says are written.
        """

    @abstractmethod
    def write(self, block: Block) -> int:
        """Write the done rows of ``block``; returns how many videos were written."""

    @abstractmethod
    def finish(self, index_rows: Iterable[dict[str, Any]]) -> None:
        """Put the finished output in place (``index_rows``: one record per exported video)."""


class NpyWriter(ExportWriter):
    """A folder of ``ID.npy`` (+ ``ID_times.npy``), ``attrs.json`` and ``index.csv``."""

    @property
    def progress_path(self) -> Path:
        return self.out / ".export-progress.json"

    def start(self, resume: bool, finished: set[str]) -> bool:
        self.out.mkdir(parents=True, exist_ok=True)
        self.resume = resume and all((self.out / f"{name}.npy").exists() for name in finished)
        write_json(self.out / "attrs.json", self.attrs)
        return self.resume

    def write(self, block: Block) -> int:
        n = 0
        for _, vid, feats, times in block.videos():
            name = encode_id(vid)
            path = self.out / f"{name}.npy"
            if self.resume and path.exists():  # finished before an interruption
                continue
            if times is not None:
                save_npy(self.out / f"{name}_times.npy", times)
            save_npy(path, feats)
            n += 1
        return n

    def finish(self, index_rows: Iterable[dict[str, Any]]) -> None:
        with atomic_file(self.out / "index.csv", "w") as f:
            w = csv.DictWriter(f, fieldnames=["id", "path", "split", "labels", "file", "n_clips"])
            w.writeheader()
            for r in index_rows:
                w.writerow({**{k: r[k] for k in ("id", "path", "split", "labels", "n_clips")},
                            "file": f"{encode_id(r['id'])}.npy"})


class H5Writer(ExportWriter):
    """One HDF5 file: ``/ID/features`` ``(K_valid, D)``, ``/ID/times``, per-group and root attrs."""

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")

    def start(self, resume: bool, finished: set[str]) -> bool:
        import h5py

        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.file = None
        if resume and self.partial.exists():
            try:
                self.file = h5py.File(self.partial, "a")
            except OSError as exc:  # interrupted mid-write: HDF5 files are not crash-safe
                log.warning("cannot reopen %s (%s); starting the export over", self.partial, exc)
        if self.file is not None and not self._keep_only(finished):
            log.warning("%s lacks videos its progress record lists; starting the export over", self.partial)
            self.file.close()
            self.file = None
        if self.file is None:
            self.partial.unlink(missing_ok=True)
            self.file = h5py.File(self.partial, "w")
            for k, v in self.attrs.items():
                self.file.attrs[k] = json.dumps(v)
            return False
        return True

    def _keep_only(self, expected: set[str]) -> bool:
        """Drop groups not in ``expected`` (unfinished chunks); False if one expected is missing."""
        have = set(self.file.keys())
        for name in have - expected:
            del self.file[name]
        return expected <= have

    def write(self, block: Block) -> int:
        n = 0
        for row, vid, feats, times in block.videos():
            name = encode_id(vid)
            if name in self.file:
                del self.file[name]
            g = self.file.create_group(name)
            g.attrs["id"] = vid
            g.attrs["row"] = row
            g.create_dataset("features", data=feats)
            if times is not None:
                g.create_dataset("times", data=times)
            n += 1
        self.file.flush()
        return n

    def finish(self, index_rows: Iterable[dict[str, Any]]) -> None:
        self.file.close()
        with open(self.partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.partial, self.out)


class ParquetWriter(ExportWriter):
    """One Parquet file, one row per valid clip: ``id``, ``clip``, ``start``, ``end``, ``features``."""

    @property
    def parts(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def start(self, resume: bool, finished: set[str]) -> bool:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        resume = resume and self.parts.is_dir()
        if not resume:
            shutil.rmtree(self.parts, ignore_errors=True)
        self.parts.mkdir(exist_ok=True)
        return resume

    def schema(self, dim: int):
        import pyarrow as pa

        return pa.schema([("id", pa.string()), ("clip", pa.int32()), ("start", pa.float32()),
                          ("end", pa.float32()), ("features", pa.list_(pa.float32(), dim))],
                         metadata={"videofeat": json.dumps(self.attrs)})

    def write(self, block: Block) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = np.flatnonzero(block.done)
        path = self.parts / f"part-{block.chunk:08d}.parquet"
        if not len(rows):
            return 0
        valid = block.valid[rows]  # (n, K)
        r, k = np.nonzero(valid)  # clip-major per row: (m,), (m,)
        dim = block.data.shape[2]
        feats = block.data[rows][r, k].astype(np.float32).reshape(-1)  # (m, D) -> (m * D,)
        times = block.times[rows][r, k]  # (m, 2)
        table = pa.table({
            "id": pa.array(block.ids[rows][r].astype(str)),
            "clip": pa.array(k.astype(np.int32)),
            "start": pa.array(times[:, 0]),
            "end": pa.array(times[:, 1]),
            "features": pa.FixedSizeListArray.from_arrays(pa.array(feats), dim),
        }, schema=self.schema(dim))
        tmp = temp_name(path)
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        return len(rows)

    def finish(self, index_rows: Iterable[dict[str, Any]]) -> None:
        import pyarrow.parquet as pq

        dim = int(self.attrs["set_attrs"]["spec"]["dim"])
        tmp = temp_name(self.out)
        with pq.ParquetWriter(tmp, self.schema(dim)) as w:
            for part in sorted(self.parts.glob("part-*.parquet")):
                pf = pq.ParquetFile(part)
                for g in range(pf.num_row_groups):
                    w.write_table(pf.read_row_group(g))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.out)
        shutil.rmtree(self.parts, ignore_errors=True)


WRITERS: dict[str, type[ExportWriter]] = {"npy": NpyWriter, "h5": H5Writer, "parquet": ParquetWriter}
