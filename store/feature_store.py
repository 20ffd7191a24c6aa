"""``FeatureStore``: one Zarr v3 directory holding videos, labels, features and predictions.

Row ``i`` means the same video in every array. The committed number of videos is the root
attribute ``n_videos``: an append grows every array first and bumps ``n_videos`` last, so a
crash mid-append leaves arrays that are merely longer than ``n_videos`` (trimmed on the next
writable open) and never a half-added video. See ``store/README.md`` for the whole schema.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr
from zarr.codecs import BloscCodec

from store._column import repair_column_swaps, replace_column
from store._durable import DurableLocalStore
from store._lock import FileLock
from store.errors import (
    ClassMismatch,
    DuplicateVideoId,
    FeatureSetExists,
    FeatureSetNotFound,
    PredictionRunNotFound,
    ReadOnlyStore,
    SchemaMismatch,
    ShapeMismatch,
    StoreError,
    StoreExists,
    StoreNotFound,
    VideoNotFound,
)
from store.feature_set import FeatureSet
from store.schema import SCHEMA_VERSION, VIDEO_COLUMNS, FeatureSetSpec, code_version

log = logging.getLogger(__name__)

VIDEO_CHUNK = 16384
LABEL_CHUNK = 4096
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _check_name(kind: str, name: str) -> None:
    if not _NAME_RE.match(name or ""):
        raise StoreError(f"invalid {kind} name {name!r}: use letters, digits, '_', '-', '.' (not leading)")


def _compressors(name: str) -> Any:
    if name == "none":
        return None
    return [BloscCodec(cname=name, clevel=5 if name == "lz4" else 3, shuffle="shuffle")]


def _creation_info() -> dict[str, str]:
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "code_version": code_version(),
    }


class FeatureStore:
    """A feature store on local disk. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, path: Path, root: zarr.Group, mode: str) -> None:
        self.path = path
        self.root = root
        self.mode = mode
        self._id_index: np.ndarray | None = None  # sorted id hashes of committed rows, built on first append

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create(cls, path: str | os.PathLike, *, classes: Sequence[str], overwrite: bool = False) -> FeatureStore:
        """Create an empty store with the given class list (index = label id)."""
        path = Path(path)
        classes = [str(c) for c in classes]
        if not classes or len(set(classes)) != len(classes) or any(not c for c in classes):
            raise ClassMismatch("classes must be a non-empty list of unique, non-empty names")
        if path.exists():
            if not overwrite:
                raise StoreExists(f"{path} already exists; open it, or pass overwrite=True to replace it")
            shutil.rmtree(path)
        root = zarr.open_group(DurableLocalStore(path), mode="w", zarr_format=3)
        root.attrs.update({"schema_version": SCHEMA_VERSION, "classes": classes, "n_videos": 0,
                           "columns": {}, **_creation_info()})
        root.create_group("videos")
        root.create_group("features")
        root.create_group("predictions")
        root.create_array("labels", shape=(0, len(classes)), chunks=(LABEL_CHUNK, len(classes)),
                          dtype="uint8", fill_value=0, compressors=_compressors("zstd"))
        return cls(path, root, "a")

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", *, classes: Sequence[str] | None = None) -> FeatureStore:
        """Open an existing store.

        Args:
            path: The ``NAME.zarr`` directory.
            mode: ``"r"`` (read-only) or ``"a"`` (read and write).
            classes: If given, the store's classes must equal these (else ClassMismatch).
        """
        if mode not in ("r", "a"):
            raise StoreError(f"mode must be 'r' or 'a', got {mode!r}")
        path = Path(path)
        if not (path / "zarr.json").is_file():
            raise StoreNotFound(f"no feature store at {path} (create one with FeatureStore.create or extract.run)")
        store = DurableLocalStore(path, read_only=(mode == "r"))
        try:
            root = zarr.open_group(store, mode="r" if mode == "r" else "r+", zarr_format=3)
        except Exception as exc:  # zarr raises several types for a damaged group
            raise SchemaMismatch(f"{path} is not a readable Zarr v3 group: {exc}") from None
        version = root.attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaMismatch(f"{path} has schema version {version!r}; this code reads version {SCHEMA_VERSION}")
        fs = cls(path, root, mode)
        if classes is not None and list(classes) != fs.classes:
            raise ClassMismatch(f"class list differs from the store's {len(fs.classes)} classes "
                                f"(first difference: {_first_difference(list(classes), fs.classes)})")
        if mode == "a":
            fs._trim_uncommitted()
        return fs

    def refresh(self) -> None:
        """Re-read metadata written by other processes (new rows, feature sets, runs)."""
        self.root = zarr.open_group(self.root.store, mode="r" if self.mode == "r" else "r+", zarr_format=3)

    # ------------------------------------------------------------------ properties
    @property
    def classes(self) -> list[str]:
        return list(self.root.attrs["classes"])

    @property
    def n_videos(self) -> int:
        return int(self.root.attrs["n_videos"])

    @property
    def columns(self) -> dict[str, str]:
        """Video column name -> dtype."""
        return dict(self.root.attrs["columns"])

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, videos={self.n_videos}, classes={len(self.classes)})"

    def _writable(self) -> None:
        if self.mode == "r":
            raise ReadOnlyStore(f"store {self.path} is open read-only; open it with mode='a' to write")

    # ------------------------------------------------------------------ videos & labels
    def append_videos(self, table: pd.DataFrame,
                      labels: np.ndarray | Sequence[Sequence[str | int]] | None = None) -> np.ndarray:
        """Append videos (and their labels); returns their new row indices.

        Args:
            table: At least ``id`` and ``path`` columns; the standard columns ``split``,
                ``n_frames``, ``fps``, ``duration``, ``has_audio`` and any extra ones are kept.
            labels: ``(n, C)`` multi-hot matrix, or one list of class names or ids per video
                (a single-label CSV becomes one-hot), or None for unlabelled videos.
        """
        self._writable()
        if not isinstance(table, pd.DataFrame) or not {"id", "path"} <= set(table.columns):
            raise SchemaMismatch("append_videos needs a pandas DataFrame with at least 'id' and 'path' columns")
        table = table.reset_index(drop=True)
        n = len(table)
        ids = table["id"].astype(str)
        dup = ids[ids.duplicated()]
        if len(dup):
            raise DuplicateVideoId(f"video id {dup.iloc[0]!r} appears twice in the appended table")
        new_hashes = id_hashes(ids.to_numpy(dtype=object))
        clash = self._ids_in_store(ids.to_numpy(dtype=object), new_hashes)
        if clash:
            raise DuplicateVideoId(f"{len(clash)} video id(s) already in the store, e.g. {clash[0]!r}")
        multi_hot = self._labels_matrix(labels, n)
        columns = self._resolve_columns(table)
        with self._append_lock():
            old = self.n_videos
            new = old + n
            vg = self.root["videos"]
            for name, dtype in columns.items():
                values = _column_values(table, name, dtype)
                if name not in vg:
                    vg.create_array(name, shape=(old,), chunks=(VIDEO_CHUNK,), dtype=_zarr_dtype(dtype),
                                    fill_value=_fill(dtype), compressors=_compressors("zstd"))
                arr = vg[name]
                arr.resize((new,))
                arr[old:new] = values
            lab = self.root["labels"]
            lab.resize((new, len(self.classes)))
            lab[old:new] = multi_hot
            for name in self.feature_sets():
                for arr in self.feature_set(name).arrays.values():
                    arr.resize((new,) + arr.shape[1:])
            self.root.attrs.update({"n_videos": new, "columns": columns})  # the commit point
        if self._id_index is not None:  # O(N) copy of 8-byte hashes, no store read
            self._id_index = np.insert(self._id_index, np.searchsorted(self._id_index, np.sort(new_hashes)),
                                       np.sort(new_hashes))
        return np.arange(old, new)

    def _ids_in_store(self, ids: np.ndarray, hashes: np.ndarray) -> list[str]:
        """The ``ids`` already in the store.

        Committed ids are kept as a sorted array of their 64-bit hashes, read block by block
        from ``videos/id`` on the first append after opening (8 bytes a row) and grown by each
        append, so a batch costs a search per id; only ids whose hash matches are read back
        and compared.
        """
        n = self.n_videos
        if self._id_index is None or len(self._id_index) != n:  # first append, or rows appended elsewhere
            col = self.root["videos"]["id"] if "id" in self.root["videos"] else None
            parts = ([id_hashes(np.asarray(col[a:a + VIDEO_CHUNK])) for a in range(0, n, VIDEO_CHUNK)]
                     if col is not None else [])
            self._id_index = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
        pos = np.minimum(np.searchsorted(self._id_index, hashes), max(len(self._id_index) - 1, 0))
        maybe = np.flatnonzero(self._id_index[pos] == hashes) if len(self._id_index) else np.zeros(0, np.int64)
        if not len(maybe):
            return []
        existing = set(self.video_ids())  # a hash match: rare, so the exact check may read every id
        return [str(ids[i]) for i in maybe if ids[i] in existing]

    def _resolve_columns(self, table: pd.DataFrame) -> dict[str, str]:
        columns = self.columns
        if not columns:
            columns = {k: v[0] for k, v in VIDEO_COLUMNS.items()}
        for name in table.columns:
            if name == "labels":
                continue
            if name not in columns:
                if self.n_videos:
                    raise SchemaMismatch(f"column {name!r} is not in the store; its columns are {sorted(columns)}")
                columns[name] = _infer_dtype(table[name])
        return columns

    def _labels_matrix(self, labels: Any, n: int) -> np.ndarray:
        c = len(self.classes)
        if labels is None:
            return np.zeros((n, c), np.uint8)
        if isinstance(labels, np.ndarray) and labels.ndim == 2:
            if labels.shape != (n, c):
                raise ClassMismatch(f"label matrix has shape {labels.shape}; expected ({n}, {c}) for this store")
            if not np.isin(labels, (0, 1)).all():
                raise ClassMismatch("a multi-hot label matrix may only hold 0 and 1")
            return labels.astype(np.uint8)
        labels = list(labels)
        if len(labels) != n:
            raise ClassMismatch(f"{len(labels)} label lists for {n} videos")
        index = {name: i for i, name in enumerate(self.classes)}
        out = np.zeros((n, c), np.uint8)
        for r, row in enumerate(labels):
            if isinstance(row, (str, int, np.integer)):
                row = [row]
            for lab in row:
                if isinstance(lab, (int, np.integer)) and not isinstance(lab, bool):
                    if not 0 <= lab < c:
                        raise ClassMismatch(f"label id {lab} of video {r} is outside 0..{c - 1}")
                    out[r, lab] = 1
                elif str(lab) in index:
                    out[r, index[str(lab)]] = 1
                else:
                    raise ClassMismatch(f"unknown label {lab!r} for video {r}; the store's classes are "
                                        f"{', '.join(self.classes[:8])}{'...' if c > 8 else ''}")
        return out

    def videos(self, columns: Sequence[str] | None = None, rows: slice | None = None) -> pd.DataFrame:
        """The videos table (index = row), or the rows of a slice of it (``rows=slice(a, b)``)."""
        start, stop, _ = (rows or slice(None)).indices(self.n_videos)
        vg = self.root["videos"]
        cols = list(self.columns) if columns is None else list(columns)
        data = {}
        for name in cols:
            if name not in vg:
                raise SchemaMismatch(f"no video column {name!r}; columns are {sorted(self.columns)}")
            values = np.asarray(vg[name][start:stop])
            data[name] = values.astype(object) if values.dtype.kind in "TUO" else values
        return pd.DataFrame(data, index=pd.RangeIndex(start, max(start, stop), name="row"))

    def video_ids(self) -> np.ndarray:
        if "id" not in self.root["videos"]:
            return np.array([], dtype=object)
        return np.asarray(self.root["videos"]["id"][: self.n_videos]).astype(object)

    def rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """Row index of each id (raises VideoNotFound for an unknown id)."""
        lookup = {v: i for i, v in enumerate(self.video_ids())}
        try:
            return np.array([lookup[str(i)] for i in ids], dtype=np.int64)
        except KeyError as exc:
            raise VideoNotFound(f"no video with id {exc.args[0]!r} in {self.path}") from None

    def split_rows(self, split: str) -> np.ndarray:
        """Rows whose ``split`` column equals ``split`` (``all`` for every row)."""
        if split == "all":
            return np.arange(self.n_videos)
        col = (np.asarray(self.root["videos"]["split"][: self.n_videos]).astype(object) if self.n_videos
               else np.array([]))
        return np.flatnonzero(col == split)

    def set_splits(self, splits: Sequence[str] | np.ndarray) -> None:
        """Replace every row's ``split`` value at once, crash-safely (all new values or all old).

        Args:
            splits: ``(N,)`` split names, one per row (e.g. ``train``, ``val``, ``test``).
        """
        self._writable()
        values = np.asarray([str(s) for s in splits], dtype=object)
        if not self.n_videos:
            raise StoreError(f"{self.path} holds no videos to split")
        if values.shape != (self.n_videos,):
            raise ShapeMismatch(f"need one split per video: {self.n_videos}, got {values.shape[0]}")
        with self._append_lock():
            replace_column(self.path, self.root["videos"], "split", values, _compressors("zstd"))
        self.refresh()

    def labels(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """``(n, C)`` uint8 multi-hot labels."""
        lab = self.root["labels"]
        if rows is None:
            return np.asarray(lab[: self.n_videos])
        return np.asarray(lab.get_orthogonal_selection((np.asarray(rows, dtype=np.int64), slice(None))))

    # ------------------------------------------------------------------ feature sets
    def feature_sets(self) -> list[str]:
        return sorted(k for k, _ in self.root["features"].groups() if not k.startswith("."))

    def feature_set(self, name: str) -> FeatureSet:
        if name not in self.feature_sets():
            have = ", ".join(self.feature_sets()) or "none"
            raise FeatureSetNotFound(f"no feature set {name!r} in {self.path} (it has: {have})")
        return FeatureSet(self, name)

    def create_feature_set(self, name: str, spec: FeatureSetSpec, *, exist_ok: bool = True) -> FeatureSet:
        """Create a feature set, or return the existing one if its spec is identical.

        A feature set of that name with a different spec raises FeatureSetExists: features
        made differently must never be mixed in one set.
        """
        self._writable()
        _check_name("feature set", name)
        if name in self.feature_sets():
            fset = self.feature_set(name)
            if fset.spec != spec:
                diff = sorted(k for k, v in spec.to_dict().items() if fset.spec.to_dict().get(k) != v)
                raise FeatureSetExists(f"feature set {name!r} exists with a different spec (differs in: "
                                       f"{', '.join(diff)}); choose another --set name or delete it")
            if not exist_ok:
                raise FeatureSetExists(f"feature set {name!r} already exists")
            return fset
        n, k, d, c = self.n_videos, spec.clips, spec.dim, spec.chunk_rows
        tmp = f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        g = self.root["features"].create_group(tmp)
        comp = _compressors(spec.compressor)
        g.create_array("data", shape=(n, k, d), chunks=(c, k, d), dtype=spec.dtype, fill_value=0, compressors=comp)
        g.create_array("valid", shape=(n, k), chunks=(c, k), dtype="bool", fill_value=False)
        g.create_array("times", shape=(n, k, 2), chunks=(c, k, 2), dtype="float32", fill_value=float("nan"))
        g.create_array("done", shape=(n,), chunks=(c,), dtype="bool", fill_value=False)
        g.create_array("errors", shape=(n,), chunks=(c,), dtype=str, fill_value="")
        g.attrs.update({"spec": spec.to_dict(), "fingerprint": spec.fingerprint(), **_creation_info()})
        final = self.path / "features" / name
        try:
            os.rename(self.path / "features" / tmp, final)  # atomic: the set appears complete or not at all
        except OSError:
            shutil.rmtree(self.path / "features" / tmp, ignore_errors=True)
            if final.exists():  # another process created it first
                return self.create_feature_set(name, spec, exist_ok=exist_ok)
            raise
        self.refresh()
        return self.feature_set(name)

    def delete_feature_set(self, name: str) -> None:
        self._writable()
        self.feature_set(name)
        shutil.rmtree(self.path / "features" / name)
        self.refresh()

    def shard_range(self, shard: int, n_shards: int, chunk_rows: int = 256) -> tuple[int, int]:
        """Chunk-aligned half-open row range of shard ``shard`` of ``n_shards`` (may be empty)."""
        if not 0 <= shard < n_shards:
            raise StoreError(f"shard must be i/n with 0 <= i < n, got {shard}/{n_shards}")
        n_chunks = -(-self.n_videos // chunk_rows)
        bounds = np.linspace(0, n_chunks, n_shards + 1).round().astype(int) * chunk_rows
        return int(min(bounds[shard], self.n_videos)), int(min(bounds[shard + 1], self.n_videos))

    # ------------------------------------------------------------------ predictions
    def prediction_runs(self) -> list[str]:
        return sorted(k for k, _ in self.root["predictions"].groups() if not k.startswith("."))

    def write_predictions(self, run: str, scores: np.ndarray, attrs: dict[str, Any] | None = None,
                          fold: np.ndarray | None = None) -> None:
        """Write (or replace) a prediction run atomically.

        Args:
            run: Run name.
            scores: ``(N, C)`` class scores for every row (probabilities or logits; say which in attrs).
            attrs: JSON-serialisable record of how they were made (head, loss, features, metrics...).
            fold: ``(N,)`` int, the fold a row was held out in for out-of-fold predictions
                (-1: the row's score comes from a model that did not train on it as a fold member,
                e.g. val/test rows, or no folds were used).
        """
        n, c = self.n_videos, len(self.classes)
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (n, c):
            raise ShapeMismatch(f"scores must have shape ({n}, {c}) (videos x classes), got {scores.shape}")
        with self.prediction_writer(run, attrs) as w:
            w.write(0, scores, fold)

    @contextlib.contextmanager
    def prediction_writer(self, run: str, attrs: dict[str, Any] | None = None) -> Iterator[PredictionWriter]:
        """Write (or replace) a prediction run block by block; it appears atomically on a clean exit.

        Rows never written stay NaN (scores) and -1 (fold). ``writer.attrs`` may be filled in
        until the block ends (e.g. with metrics computed from the blocks). On an exception the
        half-written run is removed and an existing run of that name is left as it was::

            with fs.prediction_writer("fused") as w:
                for a in range(0, fs.n_videos, 65_536):
                    w.write(a, scores_of_rows(a, a + 65_536))
                w.attrs.update(metrics=...)
        """
        self._writable()
        _check_name("prediction run", run)
        n, c = self.n_videos, len(self.classes)
        pdir = self.path / "predictions"
        tmp = f".tmp-{run}-{uuid.uuid4().hex[:8]}"
        g = self.root["predictions"].create_group(tmp)
        try:
            writer = PredictionWriter(
                g.create_array("scores", shape=(n, c), chunks=(LABEL_CHUNK, c), dtype="float32",
                               fill_value=float("nan"), compressors=_compressors("zstd")),
                g.create_array("fold", shape=(n,), chunks=(VIDEO_CHUNK,), dtype="int16", fill_value=-1),
                dict(attrs or {}))
            yield writer
            g.attrs.update({"attrs": writer.attrs, **_creation_info()})
        except BaseException:
            shutil.rmtree(pdir / tmp, ignore_errors=True)
            raise
        old = pdir / f".old-{run}-{uuid.uuid4().hex[:8]}"
        if (pdir / run).exists():
            os.rename(pdir / run, old)
        os.rename(pdir / tmp, pdir / run)
        shutil.rmtree(old, ignore_errors=True)
        self.refresh()

    def read_predictions(self, run: str) -> tuple[np.ndarray, dict[str, Any]]:
        """``(scores (n, C) float32, attrs)``; n may be below N if videos were appended later."""
        g = self._run_group(run)
        return np.asarray(g["scores"][:]), dict(g.attrs["attrs"])

    def prediction_scores(self, run: str) -> zarr.Array:
        """A run's ``(n, C)`` float32 scores array, to read row blocks of it (``arr[a:b]``)
        without loading the whole run."""
        return self._run_group(run)["scores"]

    def prediction_attrs(self, run: str) -> dict[str, Any]:
        """A run's attrs, without reading its scores (metadata only)."""
        return dict(self._run_group(run).attrs["attrs"])

    def prediction_rows(self, run: str) -> int:
        """How many rows a run scores (below N if videos were appended after it)."""
        return int(self._run_group(run)["scores"].shape[0])

    def read_prediction_folds(self, run: str) -> np.ndarray:
        return np.asarray(self._run_group(run)["fold"][:])

    def _run_group(self, run: str) -> zarr.Group:
        if run not in self.prediction_runs():
            have = ", ".join(self.prediction_runs()) or "none"
            raise PredictionRunNotFound(f"no prediction run {run!r} in {self.path} (it has: {have})")
        return self.root[f"predictions/{run}"]

    # ------------------------------------------------------------------ crash repair
    def _append_lock(self):
        return FileLock(self.path / ".append.lock")

    def _trim_uncommitted(self) -> None:
        """Finish an interrupted column swap; shrink arrays a crashed append left longer than ``n_videos``."""
        with FileLock(self.path / ".append.lock", blocking=False) as held:
            if not held:
                return  # a live appender is at work; it will leave things consistent
            repair_column_swaps(self.path)
            n = self.n_videos
            arrays = [a for _, a in self.root["videos"].arrays()] + [self.root["labels"]]
            for name in self.feature_sets():
                arrays += list(self.feature_set(name).arrays.values())
            for arr in arrays:
                if arr.shape[0] > n:
                    log.warning("trimming %s from %d to %d rows (an append was interrupted)", arr.path, arr.shape[0], n)
                    arr.resize((n,) + arr.shape[1:])


class PredictionWriter:
    """Writes consecutive row blocks of one prediction run (from :meth:`FeatureStore.prediction_writer`).

    Attributes:
        attrs: The run's attrs, stored when the writer's block ends.
    """

    def __init__(self, scores: zarr.Array, fold: zarr.Array, attrs: dict[str, Any]) -> None:
        self._scores, self._fold, self.attrs = scores, fold, attrs

    def write(self, start: int, scores: np.ndarray, fold: np.ndarray | None = None) -> None:
        """Write ``scores (b, C)`` (and ``fold (b,)``, the fold each row was held out in; -1 when
        not given) to rows ``start .. start + b - 1``. Blocks of whole chunks
        (``LABEL_CHUNK`` rows) write fastest."""
        n, c = self._scores.shape
        scores = np.asarray(scores, dtype=np.float32)
        b = len(scores)
        if scores.ndim != 2 or scores.shape[1] != c or not 0 <= start <= start + b <= n:
            raise ShapeMismatch(f"scores block {scores.shape} at row {start} does not fit predictions of shape "
                                f"({n}, {c}) (videos x classes)")
        if fold is not None:
            fold = np.asarray(fold, dtype=np.int16)
            if fold.shape != (b,):
                raise ShapeMismatch(f"fold must have shape ({b},), got {fold.shape}")
            self._fold[start : start + b] = fold
        self._scores[start : start + b] = scores


def id_hashes(ids: np.ndarray) -> np.ndarray:
    """``(n,)`` uint64 hash of each video id string (stable across runs and machines)."""
    return pd.util.hash_array(np.asarray(ids).astype(object))


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"index {i}: {x!r} vs {y!r}"
    return f"lengths {len(a)} vs {len(b)}"


def _infer_dtype(col: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(col):
        return "bool"
    if pd.api.types.is_integer_dtype(col):
        return "int64"
    if pd.api.types.is_float_dtype(col):
        return "float64"
    return "str"


def _zarr_dtype(dtype: str) -> Any:
    return str if dtype == "str" else dtype


def _fill(dtype: str) -> Any:
    return {"str": "", "int64": -1, "float64": float("nan"), "bool": False}[dtype]


def _column_values(table: pd.DataFrame, name: str, dtype: str) -> np.ndarray:
    if name not in table.columns:
        return np.full(len(table), _fill(dtype), dtype=object if dtype == "str" else dtype)
    col = table[name]
    if dtype == "str":
        return np.asarray(col.fillna("").astype(str), dtype=object)
    try:
        if dtype == "bool":
            return col.fillna(False).astype(bool).to_numpy()
        if dtype == "int64":
            return col.fillna(-1).astype(np.int64).to_numpy()
        return col.astype(np.float64).to_numpy()
    except (TypeError, ValueError) as exc:
        raise SchemaMismatch(f"column {name!r} must be {dtype}: {exc}") from None
