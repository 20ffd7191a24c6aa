"""A Parquet file of one row per clip, seen as one array per video (for ``store.import --from parquet``).

The file needs ``id`` and ``features`` (a list of floats, the same length in every row)
columns; ``clip`` orders a video's rows (file order without it) and ``start`` / ``end`` give
clip times. That is ``store.export --to parquet``'s layout. One pass over the ``id`` column
finds which row groups hold each video; a video's clips are then read from those row groups,
the two most recent of which are kept decoded (files written in video order, like ours, read
each row group once).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from store.errors import ShapeMismatch, StoreError


class ParquetVideos:
    """Per-video ``(K, D)`` features and ``(K, 2)`` times of a one-row-per-clip Parquet file."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        try:
            self.file = pq.ParquetFile(path)
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot open {path} as Parquet: {exc}") from None
        self.path = path
        names = set(self.file.schema_arrow.names)
        if not {"id", "features"} <= names:
            raise ShapeMismatch(f"{path} needs 'id' and 'features' columns; it has {', '.join(sorted(names))}")
        self.has_clip, self.has_times = "clip" in names, {"start", "end"} <= names
        self.groups: dict[str, list[int]] = {}
        self.counts: dict[str, int] = {}
        for g in range(self.file.num_row_groups):
            ids = self.file.read_row_group(g, columns=["id"]).column("id").to_numpy(zero_copy_only=False)
            uniq, counts = np.unique(ids.astype(str), return_counts=True)
            for vid, c in zip(uniq.tolist(), counts.tolist()):
                self.groups.setdefault(vid, []).append(g)
                self.counts[vid] = self.counts.get(vid, 0) + c
        first = next(iter(self.groups.values()), [0])[0]
        sample = self.file.read_row_group(first, columns=["features"]).column("features") if self.groups else None
        self.dim = len(sample[0].as_py()) if sample is not None and len(sample) else 0
        self._cache: OrderedDict[int, dict[str, tuple[np.ndarray, ...]]] = OrderedDict()

    def ids(self) -> list[str]:
        return list(self.groups)

    def _group(self, g: int) -> dict[str, tuple[np.ndarray, ...]]:
        """Row group ``g`` split by video: id -> (clip order key, features (n, D), times (n, 2))."""
        if g not in self._cache:
            t = self.file.read_row_group(g)
            ids = t.column("id").to_numpy(zero_copy_only=False).astype(str)
            flat = t.column("features").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            if flat.size != len(ids) * self.dim:
                raise ShapeMismatch(f"{self.path}: row group {g} has feature lists of another length than {self.dim}")
            feats = flat.reshape(len(ids), self.dim)  # (rows, D)
            first_row = sum(self.file.metadata.row_group(i).num_rows for i in range(g))
            order = (t.column("clip").to_numpy(zero_copy_only=False) if self.has_clip
                     else first_row + np.arange(len(ids)))  # file order
            times = (np.stack([t.column(c).to_numpy(zero_copy_only=False) for c in ("start", "end")], -1)
                     if self.has_times else np.full((len(ids), 2), np.nan))
            self._cache[g] = {vid: (order[m], feats[m], times[m])
                              for vid in np.unique(ids) for m in [ids == vid]}
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        return self._cache[g]

    def read(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features (K, D), times (K, 2))`` of video ``vid``, in clip order."""
        parts = [self._group(g)[vid] for g in self.groups[vid]]
        order = np.concatenate([p[0] for p in parts])
        idx = np.argsort(order, kind="stable")
        return np.concatenate([p[1] for p in parts])[idx], np.concatenate([p[2] for p in parts])[idx]


class ParquetArray:
    """One video's features (``part="features"``) or times of a :class:`ParquetVideos`, array-like."""

    def __init__(self, videos: ParquetVideos, vid: str, part: str) -> None:
        self.videos, self.vid, self.part = videos, vid, part
        k = videos.counts[vid]
        self.shape = (k, videos.dim) if part == "features" else (k, 2)
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, key: tuple) -> np.ndarray:
        feats, times = self.videos.read(self.vid)
        out = feats if self.part == "features" else times
        return np.asarray(out, dtype=np.float32)[key]
