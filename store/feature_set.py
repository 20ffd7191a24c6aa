"""One feature set of a store: ``features/<name>/`` with its data, masks, times and progress.

::

    features/<name>/data     (N, K, D) float16   clip features, chunked (chunk_rows, K, D)
                   /valid    (N, K)    bool      which of the K slots hold a real clip
                   /times    (N, K, 2) float32   clip start/end in seconds (NaN if unknown)
                   /done     (N,)      bool      set only after the row's data is on disk
                   /errors   (N,)      str       why a row could not be extracted ("" if none)

Every array is chunked by the same ``chunk_rows``, so a writer of a chunk-aligned row range
touches no chunk of any other writer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr

from store._durable import partial_files
from store._lock import WriterLock
from store.errors import ReadOnlyStore, ShapeMismatch, StoreError
from store.schema import FeatureSetSpec

if TYPE_CHECKING:
    from store.feature_store import FeatureStore

log = logging.getLogger(__name__)

ARRAYS = ("data", "valid", "times", "done", "errors")


def _as_selection(rows: np.ndarray) -> slice | np.ndarray:
    """A slice when rows are one contiguous run (much faster in zarr), else the array."""
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


class FeatureSet:
    """Reader (and writer factory) of one feature set. Obtain it from ``FeatureStore``."""

    def __init__(self, store: FeatureStore, name: str) -> None:
        self.store = store
        self.name = name
        self.group: zarr.Group = store.root[f"features/{name}"]
        self.spec = FeatureSetSpec.from_dict(self.group.attrs["spec"])
        self._arrays: dict[str, zarr.Array] = {a: self.group[a] for a in ARRAYS}
        self._raw_dir = self._raw_chunk_path()

    @property
    def arrays(self) -> dict[str, zarr.Array]:
        """The set's zarr arrays by name (``data``, ``valid``, ``times``, ``done``, ``errors``).

        Re-opened when the store's row count moved since they were opened (videos appended
        through the same ``FeatureStore`` after this object was made): a zarr array object
        keeps the shape it was opened with, and writing past it would silently drop rows
        (longer arrays are normal: an append killed before its commit point leaves them).
        """
        if self._arrays["done"].shape[0] < self.n_rows:
            self._arrays = {a: self.group[a] for a in ARRAYS}
        return self._arrays

    # ------------------------------------------------------------------ properties
    @property
    def path(self) -> Path:
        """Directory of the feature set (indexes are saved beside the arrays, in here)."""
        return self.store.path / "features" / self.name

    @property
    def n_rows(self) -> int:
        return self.store.n_videos

    @property
    def chunk_rows(self) -> int:
        return self.spec.chunk_rows

    @property
    def n_chunks(self) -> int:
        return -(-self.n_rows // self.chunk_rows)

    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    def __repr__(self) -> str:
        return f"FeatureSet({self.name!r}, rows={self.n_rows}, K={self.spec.clips}, D={self.spec.dim})"

    # ------------------------------------------------------------------ progress
    def done(self) -> np.ndarray:
        """(N,) bool: rows whose features are durably written."""
        return np.asarray(self.arrays["done"][: self.n_rows], dtype=bool)

    def errors(self) -> dict[int, str]:
        """Row -> error text, for rows that could not be extracted."""
        err = np.asarray(self.arrays["errors"][: self.n_rows]).astype(object)
        bad = np.flatnonzero(err != "")
        return {int(r): str(err[r]) for r in bad}

    def pending(self, rows: Sequence[int] | np.ndarray | None = None, *, retry_errors: bool = False) -> np.ndarray:
        """Rows (optionally among ``rows``) that still need extracting.

        Args:
            rows: Restrict to these rows (e.g. a shard's range); default all rows.
            retry_errors: Also return rows that failed before (default: they are skipped).
        """
        todo = ~self.done()
        if not retry_errors:
            err = np.asarray(self.arrays["errors"][: self.n_rows]).astype(object)
            todo &= err == ""
        if rows is not None:
            sel = np.zeros(self.n_rows, dtype=bool)
            sel[np.asarray(rows, dtype=np.int64)] = True
            todo &= sel
        return np.flatnonzero(todo)

    # ------------------------------------------------------------------ reading
    def read(self, rows: Sequence[int] | np.ndarray | slice | None = None, *,
             dtype: np.dtype | type | None = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Features and valid-clip masks of ``rows`` (default: all rows).

        Rows not yet marked done read as zeros with an all-False mask, so a reader that runs
        beside a writer never sees a half-written row.

        Args:
            rows: Row indices (any order, repeats allowed), a slice, or None for all rows.
            dtype: Output dtype of ``data``; None keeps the storage dtype (no conversion).

        Returns:
            ``(data (n, K, D), valid (n, K) bool)``.
        """
        if rows is None:
            rows = slice(0, self.n_rows)
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(self.n_rows)
            return self._read_selection(slice(start, stop), dtype)
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise ShapeMismatch(f"rows out of range 0..{self.n_rows - 1} in feature set {self.name!r}")
        uniq, inverse = np.unique(idx, return_inverse=True)
        data, valid = self._read_selection(_as_selection(uniq) if len(uniq) else slice(0, 0), dtype)
        if len(uniq) == len(idx) and np.array_equal(uniq, idx):
            return data, valid
        return data[inverse], valid[inverse]

    def _read_selection(self, sel: slice | np.ndarray, dtype: np.dtype | type | None) -> tuple[np.ndarray, np.ndarray]:
        """Read a slice or a sorted array of unique rows; ``done`` is read first."""
        a = self.arrays
        if isinstance(sel, slice):
            done = np.asarray(a["done"][sel], dtype=bool)
            data = a["data"][sel]
            valid = np.asarray(a["valid"][sel], dtype=bool)
        else:
            done = np.asarray(a["done"].get_orthogonal_selection(sel), dtype=bool)
            data = a["data"].get_orthogonal_selection((sel,))
            valid = np.asarray(a["valid"].get_orthogonal_selection((sel,)), dtype=bool)
        data = np.asarray(data, dtype=dtype or data.dtype)
        if not done.all():
            data[~done] = 0
            valid = valid & done[:, None]
        return data, valid

    def read_times(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """(n, K, 2) clip start/end seconds."""
        sel = slice(0, self.n_rows) if rows is None else rows
        if isinstance(sel, slice):
            return np.asarray(self.arrays["times"][sel])
        return np.asarray(self.arrays["times"].get_orthogonal_selection((np.asarray(sel),)))

    def _raw_chunk_path(self) -> Path | None:
        """Directory of ``data`` chunks if they can be read as plain files, else None.

        An uncompressed Zarr v3 chunk with the ``bytes`` codec (little-endian), default
        ``c/`` key encoding and no sharding is exactly the C-order array bytes, so
        ``np.fromfile`` reads it ~3x faster than zarr-python's codec pipeline. Anything
        else goes through zarr.
        """
        meta = self.arrays["data"].metadata
        codecs = [c.to_dict() for c in meta.codecs]
        plain = (len(codecs) == 1 and codecs[0].get("name") == "bytes"
                 and codecs[0].get("configuration", {}).get("endian", "little") == "little"
                 and meta.chunk_key_encoding.to_dict().get("name") == "default"
                 and meta.chunk_key_encoding.to_dict().get("configuration", {}).get("separator", "/") == "/")
        return self.path / "data" / "c" if plain and np.little_endian else None

    def read_data_chunk(self, c: int) -> np.ndarray:
        """Stored ``data`` of chunk ``c`` (``(rows, K, D)``, storage dtype), whatever ``done`` says.

        Chunk files are replaced atomically, so this sees a whole old or a whole new chunk.
        """
        start = c * self.chunk_rows
        stop = min(start + self.chunk_rows, self.n_rows)
        raw = self._raw_dir
        if raw is None:
            return np.asarray(self.arrays["data"][start:stop])
        shape = (self.chunk_rows, self.spec.clips, self.spec.dim)
        try:
            full = np.fromfile(raw / str(c) / "0" / "0", dtype=np.dtype(self.spec.dtype).newbyteorder("<"))
        except FileNotFoundError:  # never written: the fill value
            return np.zeros((stop - start,) + shape[1:], dtype=self.spec.dtype)
        if full.size != np.prod(shape):
            raise StoreError(f"chunk {c} of feature set {self.name!r} is damaged ({full.size * full.itemsize} "
                             f"bytes); run python -m store.verify")
        return full.reshape(shape)[: stop - start]

    def iter_chunks(self, chunks: Sequence[int] | None = None, *,
                    dtype: np.dtype | type | None = np.float32) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield ``(first_row, data, valid)`` a whole storage chunk at a time.

        ``done`` and ``valid`` are read once up front (they are small), so each chunk costs
        one read of ``data``; rows not done when the scan started read as zeros / invalid.
        """
        n = self.n_rows
        done = self.done()
        valid_all = np.asarray(self.arrays["valid"][:n], dtype=bool) & done[:, None]
        for c in range(self.n_chunks) if chunks is None else chunks:
            start = c * self.chunk_rows
            stop = min(start + self.chunk_rows, n)
            data = self.read_data_chunk(c)
            data = np.asarray(data, dtype=dtype or data.dtype)
            d = done[start:stop]
            if not d.all():
                data[~d] = 0
            yield start, data, valid_all[start:stop]

    def to_dask(self):
        """``(data, valid, done)`` as Dask arrays whose chunks are the storage chunks."""
        import dask.array as da

        n = self.n_rows
        return tuple(da.from_zarr(self.arrays[a])[:n] for a in ("data", "valid", "done"))

    # ------------------------------------------------------------------ writing
    def writer(self, rows: range | tuple[int, int] | None = None) -> FeatureWriter:
        """A writer holding the feature set's lock (use it as a context manager).

        Args:
            rows: None to write any row (one writer per feature set), or a chunk-aligned
                half-open range ``(start, stop)`` for one of several shard writers.
        """
        if self.store.mode == "r":
            raise ReadOnlyStore(f"store {self.store.path} is open read-only; open it with mode='a' to write")
        if isinstance(rows, range):
            rows = (rows.start, rows.stop)
        if rows is not None:
            start, stop = int(rows[0]), int(rows[1])
            c = self.chunk_rows
            if not 0 <= start < stop <= self.n_rows:
                raise ShapeMismatch(f"row range {start}:{stop} is outside 0:{self.n_rows}")
            if start % c or (stop % c and stop != self.n_rows):
                raise ShapeMismatch(
                    f"shard range {start}:{stop} is not aligned to the {c}-row chunks of {self.name!r}; "
                    f"use store.shard_range(i, n) to split rows between writers"
                )
            rows = (start, stop)
        return FeatureWriter(self, rows)


class FeatureWriter:
    """Writes rows of one feature set; ``done`` is set only after the data is durable."""

    def __init__(self, fset: FeatureSet, rows: tuple[int, int] | None) -> None:
        self.fset = fset
        self.rows = rows
        self._lock = WriterLock(fset.path, rows)
        self._open = False

    def __enter__(self) -> FeatureWriter:
        self._lock.acquire()
        self._open = True
        self._clean_partials()
        return self

    def __exit__(self, *exc: object) -> None:
        self._open = False
        self._lock.release()

    def _clean_partials(self) -> None:
        """Delete temporary files a killed writer left in our chunks."""
        removed = 0
        for p in partial_files(self.fset.path):
            if self.rows is not None:
                rel = p.relative_to(self.fset.path).parts  # (array, "c", i, ...)
                if len(rel) < 3 or rel[1] != "c":
                    continue
                first = int(rel[2].split(".")[0])
                c = self.fset.chunk_rows
                if not self.rows[0] // c <= first < -(-self.rows[1] // c):
                    continue
            p.unlink(missing_ok=True)
            removed += 1
        if removed:
            log.info("removed %d partial chunk file(s) left by an interrupted writer in %s", removed, self.fset.name)

    def _check_rows(self, rows: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self._open:
            raise StoreError("use the writer as a context manager: `with fset.writer() as w: ...`")
        self._lock.check()  # a lease taken over (this process was taken for dead) must not write on
        idx = np.asarray(rows, dtype=np.int64).reshape(-1)
        lo, hi = self.rows if self.rows is not None else (0, self.fset.n_rows)
        if idx.size and (idx.min() < lo or idx.max() >= hi):
            raise ShapeMismatch(f"rows must lie in {lo}:{hi} for this writer of {self.fset.name!r}")
        order = np.argsort(idx, kind="stable")
        if np.any(np.diff(idx[order]) == 0):
            raise ShapeMismatch("the same row appears twice in one write")
        return idx[order], order

    def write_rows(self, rows: Sequence[int] | np.ndarray, data: np.ndarray,
                   valid: np.ndarray | None = None, times: np.ndarray | None = None) -> None:
        """Write features of ``rows``, then mark them done.

        Args:
            rows: Row indices (any order, no repeats).
            data: ``(n, K, D)`` features; must be finite.
            valid: ``(n, K)`` bool, which clip slots are real (default: all).
            times: ``(n, K, 2)`` clip start/end seconds (default: NaN).
        """
        spec = self.fset.spec
        idx, order = self._check_rows(rows)
        n, k, d = len(idx), spec.clips, spec.dim
        data = np.asarray(data)
        if data.shape != (n, k, d):
            raise ShapeMismatch(f"{self.fset.name!r} expects data of shape ({n}, {k}, {d}), got {data.shape}")
        if not np.issubdtype(data.dtype, np.floating):
            raise ShapeMismatch(f"features must be floating point, got {data.dtype}")
        with np.errstate(over="ignore"):  # overflow to inf is caught just below
            data = data.astype(spec.dtype)[order]
        if not np.isfinite(data).all():
            raise ShapeMismatch(f"non-finite features (NaN/inf after casting to {spec.dtype}) for {self.fset.name!r}")
        valid = np.ones((n, k), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        if valid.shape != (n, k):
            raise ShapeMismatch(f"valid must have shape ({n}, {k}), got {valid.shape}")
        times = np.full((n, k, 2), np.nan, np.float32) if times is None else np.asarray(times, np.float32)
        if times.shape != (n, k, 2):
            raise ShapeMismatch(f"times must have shape ({n}, {k}, 2), got {times.shape}")
        if n == 0:
            return
        sel = _as_selection(idx)
        a = self.fset.arrays
        # Order matters: every payload array is durable before `done` says so.
        if isinstance(sel, slice):
            a["data"][sel] = data
            a["valid"][sel] = valid[order]
            a["times"][sel] = times[order]
            a["errors"][sel] = np.full(n, "", dtype=object)
            a["done"][sel] = True
        else:
            a["data"].set_orthogonal_selection((sel,), data)
            a["valid"].set_orthogonal_selection((sel,), valid[order])
            a["times"].set_orthogonal_selection((sel,), times[order])
            a["errors"].set_orthogonal_selection((sel,), np.full(n, "", dtype=object))
            a["done"].set_orthogonal_selection((sel,), np.ones(n, dtype=bool))

    def write_errors(self, rows: Sequence[int] | np.ndarray, messages: Sequence[str]) -> None:
        """Record why rows could not be extracted; they stay not-done."""
        idx, order = self._check_rows(rows)
        if len(messages) != len(idx):
            raise ShapeMismatch(f"{len(idx)} rows but {len(messages)} error messages")
        if len(idx) == 0:
            return
        msgs = np.asarray([str(m) or "error" for m in messages], dtype=object)[order]
        a = self.fset.arrays
        a["done"].set_orthogonal_selection((idx,), np.zeros(len(idx), dtype=bool))
        a["errors"].set_orthogonal_selection((idx,), msgs)

