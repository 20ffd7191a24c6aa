"""Features computed by other tools into a feature set: the library behind ``python -m store.import``.

Inputs (the id of each video is the decoded name, see ``store._exchange``):

- ``npy``: a folder of ``ID{suffix}.npy`` files, ``(K, D)`` or ``(D,)`` each (a video_features
  output folder holds ``NAME_rgb.npy``, ``NAME_flow.npy``...: pass ``suffix="_rgb"``), with
  optional ``ID_times.npy`` ``(K, 2)`` clip start/end seconds beside them; an ``attrs.json``
  in the folder (``store.export`` writes one) is kept as the source's attributes.
- ``h5``: one HDF5 file whose root members are either ``(K, D)`` / ``(D,)`` datasets named by
  id, or groups named by id holding a ``features`` dataset (and optionally ``times``); a
  group's ``id`` attribute, when present, is the id. Root attributes are kept.
- ``parquet``: one row per clip with ``id`` and ``features`` (list) columns, optionally
  ``clip`` (order) and ``start`` / ``end`` (``store.export``'s layout; see ``store._parquet_input``).

``ids_from`` names a CSV with ``id`` and ``file`` columns (``store.export``'s ``index.csv``)
when file names are not the store's ids: ``file`` is the ``.npy`` path relative to the folder,
the HDF5 member name, or the Parquet ``id`` value.

Everything is checked before anything is written (ids known, every video present unless
``allow_missing``, one D, K at most ``max_clips``); then rows are written a storage chunk at a
time through the crash-safe :class:`~store.feature_set.FeatureWriter`, so a rerun after an
interruption writes only rows not yet done.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from store._exchange import Progress, decode_id, encode_id, jsonable, no_progress
from store._parquet_input import ParquetArray, ParquetVideos
from store.errors import ShapeMismatch, StoreError, VideoNotFound
from store.feature_set import FeatureWriter
from store.feature_store import FeatureStore
from store.schema import FeatureSetSpec

log = logging.getLogger(__name__)

IMPORT_FORMATS = ("npy", "h5", "parquet")
MAX_CLIPS = 4096
CHUNK_BYTES = 8 << 20  # a storage chunk of an imported set holds about this many bytes


@dataclass
class Entry:
    """One video's features in the input.

    Attributes:
        video_id: Store id it belongs to.
        where: The file (or ``file.h5:/member``) named in messages.
        features: ``.npy`` path or HDF5 dataset.
        times: ``ID_times.npy`` path or HDF5 dataset, or None.
    """

    video_id: str
    where: str
    features: Any
    times: Any = None

    def shape(self) -> tuple[int, ...]:
        if isinstance(self.features, Path):
            try:
                return np.load(self.features, mmap_mode="r").shape
            except (OSError, ValueError) as exc:
                raise ShapeMismatch(f"{self.where}: not a readable .npy file ({exc})") from None
        return tuple(self.features.shape)

    def dtype(self) -> np.dtype:
        if isinstance(self.features, Path):
            return np.load(self.features, mmap_mode="r").dtype
        return self.features.dtype

    def read(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(features (K, D), times (K, 2) or None)``."""
        feats = np.load(self.features) if isinstance(self.features, Path) else self.features[()]
        feats = np.asarray(feats).reshape(-1, feats.shape[-1])  # (D,) -> (1, D)
        if self.times is None:
            return feats, None
        return feats, np.asarray(np.load(self.times) if isinstance(self.times, Path) else self.times[()])


@dataclass(frozen=True)
class ImportOptions:
    """How inputs are found and what the new feature set records.

    Attributes:
        suffix: ``npy`` file names are ``ID{suffix}.npy`` (e.g. ``_rgb`` for video_features).
        dataset: ``h5`` groups hold their features in this dataset.
        ids_from: CSV with ``id`` and ``file`` columns mapping inputs to store ids.
        allow_missing: Skip (and record) store videos without an input and inputs of unknown ids.
        max_clips: Refuse inputs with more clips than this (K-max sets every row's size).
        dtype: Storage dtype, ``float16`` or ``float32``.
        backbone: Recorded backbone (default: the source's, else ``imported``).
        modality: Recorded modality (default: the source's, else ``imported``).
        chunk_rows: Rows per storage chunk (default: up to 256, about ``CHUNK_BYTES`` a chunk).
    """

    suffix: str = ""
    dataset: str = "features"
    ids_from: Path | None = None
    allow_missing: bool = False
    max_clips: int = MAX_CLIPS
    dtype: str = "float16"
    backbone: str | None = None
    modality: str | None = None
    chunk_rows: int | None = None

    def __post_init__(self) -> None:
        if self.max_clips < 1 or (self.chunk_rows is not None and self.chunk_rows < 1):
            raise StoreError(f"max_clips and chunk_rows must be >= 1, got {self.max_clips}, {self.chunk_rows}")
        if self.dtype not in ("float16", "float32"):
            raise StoreError(f"dtype must be float16 or float32, got {self.dtype!r}")


@dataclass(frozen=True)
class ImportSummary:
    """What an import did.

    Attributes:
        feature_set: The set written.
        written: Videos written by this call.
        earlier: Videos already done by an earlier, interrupted call.
        missing: Store videos with no input (skipped with ``allow_missing``).
        unknown: Inputs whose id is not in the store (skipped with ``allow_missing``).
        clips: K-max of the set.
        dim: D.
    """

    feature_set: str
    written: int
    earlier: int
    missing: int
    unknown: int
    clips: int
    dim: int


def _times_name(name: str, suffix: str) -> str:
    """``ID{suffix}.npy`` -> ``ID_times.npy``."""
    stem = name[: -len(".npy")]
    return (stem[: -len(suffix)] if suffix and stem.endswith(suffix) else stem) + "_times.npy"


def _read_ids_from(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read --ids-from {path}: {exc}") from None
    if not {"id", "file"} <= set(table.columns):
        raise StoreError(f"--ids-from {path} needs 'id' and 'file' columns; it has {', '.join(table.columns)}")
    return table


def scan_npy(folder: Path, *, suffix: str = "", ids_from: Path | None = None) -> list[Entry]:
    """The ``.npy`` inputs of ``folder`` (see the module docstring for the naming rule)."""
    if not folder.is_dir():
        raise StoreError(f"{folder} is not a folder of .npy files")
    if ids_from is not None:
        pairs = [(r.id, folder / r.file) for r in _read_ids_from(ids_from).itertuples()]
    else:
        tail = f"{suffix}.npy"
        pairs = [(decode_id(p.name[: -len(tail)]), p) for p in sorted(folder.glob(f"*{tail}"))
                 if not (p.name.endswith("_times.npy") and not tail.endswith("_times.npy"))
                 and len(p.name) > len(tail)]
    out = []
    for vid, path in pairs:
        times = path.with_name(_times_name(path.name, suffix))
        out.append(Entry(vid, str(path), path, times if times.is_file() else None))
    return out


def scan_h5(h5file: Any, path: Path, *, dataset: str = "features", ids_from: Path | None = None) -> list[Entry]:
    """The inputs of an open HDF5 file (root datasets, or groups holding ``dataset``)."""
    if ids_from is not None:
        names = [(r.id, r.file) for r in _read_ids_from(ids_from).itertuples()]
    else:
        names = [(None, k) for k in h5file.keys()]
    out = []
    for vid, key in names:
        where = f"{path}:/{key}"
        if key not in h5file:
            out.append(Entry(vid or decode_id(key), where, None))  # reported as missing
            continue
        member = h5file[key]
        if hasattr(member, "shape"):  # a dataset
            out.append(Entry(vid or decode_id(key), where, member))
            continue
        if dataset not in member:
            raise ShapeMismatch(f"{where} has no {dataset!r} dataset (members: {', '.join(member.keys())})")
        gid = member.attrs.get("id")
        out.append(Entry(vid or (str(gid) if gid is not None else decode_id(key)), where, member[dataset],
                         member["times"] if "times" in member else None))
    return out


def scan_parquet(videos: ParquetVideos, *, ids_from: Path | None = None) -> list[Entry]:
    """The videos of a one-row-per-clip Parquet file (``store.export --to parquet``'s layout)."""
    names = ([(r.id, r.file) for r in _read_ids_from(ids_from).itertuples()] if ids_from is not None
             else [(vid, vid) for vid in videos.ids()])
    out = []
    for vid, key in names:
        where = f"{videos.path} (id {key!r})"
        if key not in videos.counts:
            out.append(Entry(vid, where, None))  # reported as missing
            continue
        out.append(Entry(vid, where, ParquetArray(videos, key, "features"),
                         ParquetArray(videos, key, "times") if videos.has_times else None))
    return out


def _h5_attrs(h5file: Any) -> dict[str, Any]:
    attrs = {}
    for k, v in h5file.attrs.items():
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError:
                pass
        attrs[k] = v
    return jsonable(attrs)


def _match(fs: FeatureStore, entries: list[Entry], allow_missing: bool,
           expect: Callable[[str], str]) -> tuple[list, list, list]:
    """``([(row, entry)] sorted by row, missing store ids, unknown inputs)`` after the id checks."""
    lookup = {v: i for i, v in enumerate(fs.video_ids())}
    seen: dict[int, str] = {}
    matched, unknown = [], []
    for e in entries:
        row = lookup.get(e.video_id)
        if e.features is None or (isinstance(e.features, Path) and not e.features.is_file()):
            if not allow_missing:
                raise StoreError(f"{e.where}: not found (pass --allow-missing to skip videos without an input)")
            continue
        if row is None:
            if not allow_missing:
                raise VideoNotFound(f"{e.where}: video id {e.video_id!r} is not in {fs.path} "
                                    f"(pass --allow-missing to skip it, or map names to ids with --ids-from)")
            unknown.append(e.where)
            continue
        if row in seen:
            raise StoreError(f"{e.where}: a second input for video {e.video_id!r} (the first: {seen[row]})")
        seen[row] = e.where
        matched.append((row, e))
    missing = [str(v) for v, i in lookup.items() if i not in seen]
    if missing and not allow_missing:
        raise StoreError(f"no features for video {missing[0]!r} (expected {expect(missing[0])}; "
                         f"{len(missing)} videos lack one; pass --allow-missing to skip them)")
    if not matched:
        raise StoreError("no input matches a video of the store; check the names (or --suffix, --ids-from)")
    matched.sort(key=lambda t: t[0])
    return matched, missing, unknown


def _check_shapes(matched: list[tuple[int, Entry]], max_clips: int, n_videos: int) -> tuple[int, int]:
    """``(K-max, D)`` of the inputs, or a ShapeMismatch naming the first bad file."""
    dim, first, k_max = None, "", 1
    for _, e in matched:
        shape = e.shape()
        if len(shape) not in (1, 2) or shape[-1] < 1:
            raise ShapeMismatch(f"{e.where}: shape {shape}; expected (K, D) or (D,)")
        if not np.issubdtype(e.dtype(), np.floating):
            raise ShapeMismatch(f"{e.where}: dtype {e.dtype()}; features must be floating point")
        if dim is None:
            dim, first = shape[-1], e.where
        elif shape[-1] != dim:
            raise ShapeMismatch(f"{e.where}: D={shape[-1]}, but {first} has D={dim}; every file needs the same D")
        k = shape[0] if len(shape) == 2 else 1
        if k > max_clips:
            gib = n_videos * k * dim * 2 / 2**30
            raise ShapeMismatch(f"{e.where}: {k} clips, more than --max-clips {max_clips}; every video is stored "
                                f"with K-max slots ({gib:.1f} GiB in float16 for {n_videos} videos at K={k}): "
                                f"raise --max-clips if that is affordable, or subsample the clips first")
        if e.times is not None and tuple(e.times.shape if not isinstance(e.times, Path)
                                         else np.load(e.times, mmap_mode="r").shape) != (k, 2):
            raise ShapeMismatch(f"{e.times}: times must have shape ({k}, 2) to match {e.where}")
        k_max = max(k_max, k)
    return k_max, int(dim)


def import_features(fs: FeatureStore, name: str, fmt: str, src: str | os.PathLike,
                    options: ImportOptions = ImportOptions(), *, progress: Progress = no_progress) -> ImportSummary:
    """Import features from ``src`` into feature set ``name`` of ``fs`` (opened with mode "a").

    Args:
        fs: The store (its videos must already be there).
        name: Feature set to create (or to continue, if an earlier import was interrupted).
        fmt: ``npy`` (a folder), ``h5`` or ``parquet`` (a file).
        src: The input.
        options: Naming, checks and what the set records.
        progress: Wraps the chunk loop (e.g. ``tqdm``).
    """
    if fmt not in IMPORT_FORMATS:
        raise StoreError(f"unknown import format {fmt!r}; use one of {', '.join(IMPORT_FORMATS)}")
    src = Path(src)
    ids_from = Path(options.ids_from) if options.ids_from is not None else None
    if fmt == "npy":
        attrs_file = src / "attrs.json"
        source_attrs = json.loads(attrs_file.read_text()) if attrs_file.is_file() else {}
        return _import(fs, name, scan_npy(src, suffix=options.suffix, ids_from=ids_from), source_attrs, fmt, src,
                       lambda v: str(src / f"{encode_id(v)}{options.suffix}.npy"), options, progress)
    if fmt == "parquet":
        videos = ParquetVideos(src)
        meta = videos.file.schema_arrow.metadata or {}
        source_attrs = json.loads(meta[b"videofeat"]) if b"videofeat" in meta else {}
        return _import(fs, name, scan_parquet(videos, ids_from=ids_from), source_attrs, fmt, src,
                       lambda v: f"{src} (id {v!r})", options, progress)
    import h5py

    try:
        h5file = h5py.File(src, "r")
    except OSError as exc:
        raise StoreError(f"cannot open {src} as HDF5: {exc}") from None
    with h5file:
        entries = scan_h5(h5file, src, dataset=options.dataset, ids_from=ids_from)
        return _import(fs, name, entries, _h5_attrs(h5file), fmt, src, lambda v: f"{src}:/{encode_id(v)}",
                       options, progress)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _import(fs: FeatureStore, name: str, entries: list[Entry], source_attrs: dict[str, Any], fmt: str, src: Path,
            expect: Callable[[str], str], opt: ImportOptions, progress: Progress) -> ImportSummary:
    """Check ``entries`` against the store, create (or reopen) the set and write the rows not done."""
    matched, missing, unknown = _match(fs, entries, opt.allow_missing, expect)
    k_max, dim = _check_shapes(matched, opt.max_clips, fs.n_videos)
    orig = source_attrs.get("set_attrs", {}).get("spec", {}) if isinstance(source_attrs.get("set_attrs"), dict) else {}
    auto_rows = int(max(1, min(256, CHUNK_BYTES // (k_max * dim * np.dtype(opt.dtype).itemsize))))
    spec = FeatureSetSpec(
        clips=k_max, dim=dim, dtype=opt.dtype, backbone=opt.backbone or orig.get("backbone", "imported"),
        modality=opt.modality or orig.get("modality", "imported"), weights_sha256=orig.get("weights_sha256"),
        sampling=orig.get("sampling", {}),
        extra={"imported_from": {"path": str(src.resolve()), "format": fmt, "attrs": source_attrs}},
        chunk_rows=opt.chunk_rows or auto_rows)
    fset = fs.create_feature_set(name, spec)
    rows = np.array([r for r, _ in matched], dtype=np.int64)
    todo = set(fset.pending(rows, retry_errors=True).tolist())
    with fset.writer() as w:
        record = dict(fset.attrs.get("import", {}))
        record.update({"source": str(src.resolve()), "format": fmt, "started": record.get("started", _now()),
                       "missing": len(missing), "missing_ids": missing[:1000], "unknown": len(unknown),
                       "unknown_inputs": unknown[:1000]})
        fset.group.attrs["import"] = record
        written = _write(w, [(r, e) for r, e in matched if r in todo], k_max, dim, progress)
        fset.group.attrs["import"] = {**record, "finished": _now()}
    log.info("imported %d videos into %s (K-max %d, D %d)", written, name, k_max, dim)
    return ImportSummary(name, written, len(matched) - written, len(missing), len(unknown), k_max, dim)


def _write(w: FeatureWriter, todo: list[tuple[int, Entry]], k_max: int, dim: int, progress: Progress) -> int:
    """Write ``todo`` one storage chunk at a time through ``w``; returns the number of videos written."""
    fset = w.fset
    by_chunk: dict[int, list[tuple[int, Entry]]] = {}
    for r, e in todo:
        by_chunk.setdefault(r // fset.chunk_rows, []).append((r, e))
    written = 0
    for c in progress(sorted(by_chunk), desc=f"import {fset.name}", unit="chunk"):
        items = by_chunk[c]
        data = np.zeros((len(items), k_max, dim), np.float32)  # (n, K-max, D)
        valid = np.zeros((len(items), k_max), bool)
        times = np.full((len(items), k_max, 2), np.nan, np.float32)
        for i, (_, e) in enumerate(items):
            feats, t = e.read()  # (K, D), (K, 2) or None
            with np.errstate(over="ignore"):
                if not np.isfinite(feats.astype(fset.spec.dtype)).all():
                    raise ShapeMismatch(f"{e.where}: NaN or inf (after casting to {fset.spec.dtype}); "
                                        f"{written} videos were imported, rerun after fixing it")
            data[i, : len(feats)] = feats
            valid[i, : len(feats)] = True
            if t is not None:
                times[i, : len(feats)] = t
        w.write_rows([r for r, _ in items], data, valid=valid, times=times)
        written += len(items)
    return written
