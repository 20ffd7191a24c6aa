"""Row bookkeeping of a run: clips of many videos into model batches, features back into
rows, finished rows into chunk-aligned store writes.

::

    video a: K clips --+                         +--> row a: (K, D) --+
    video b: K clips --+--> batches of B clips --+--> row b: (K, D) --+--> one write_rows per
    video c: K clips --+    (videos split across  +--> row c ...      |    finished chunk
                             batch boundaries)                       +--> (or every flush_s)
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

import numpy as np

from extract.producers import ModelInput
from store import FeatureWriter


@dataclass
class _Row:
    data: np.ndarray  # (K, D) float32, filled as batches come back
    valid: np.ndarray  # (K,) bool
    times: np.ndarray  # (K, 2) float32
    filled: int = 0


@dataclass(frozen=True)
class Piece:
    """Clips ``k0:k1`` of ``row`` sit at ``offset:offset + (k1 - k0)`` of a batch."""

    row: int
    k0: int
    k1: int
    offset: int


class ClipBatcher:
    """Batches clips across videos (up to ``batch_size`` each) and reassembles rows.

    Args:
        batch_size: clips per model batch.
        dim: D, the feature size the model returns.
    """

    def __init__(self, batch_size: int, dim: int) -> None:
        self.batch_size, self.dim = batch_size, dim
        self._queue: collections.deque[tuple[int, np.ndarray, int]] = (
            collections.deque()
        )  # row, inputs, next k
        self._rows: dict[int, _Row] = {}
        self.pending_clips = 0

    def add(self, row: int, item: ModelInput) -> None:
        k = len(item.inputs)
        self._rows[row] = _Row(np.zeros((k, self.dim), np.float32), item.valid, item.times)
        self._queue.append((row, item.inputs, 0))
        self.pending_clips += k

    def ready(self) -> bool:
        """A full batch is waiting."""
        return self.pending_clips >= self.batch_size

    def next_batch(self) -> tuple[np.ndarray, list[Piece]] | None:
        """Up to ``batch_size`` clips, oldest videos first; None when nothing waits."""
        if not self._queue:
            return None
        parts, pieces, size = [], [], 0
        while self._queue and size < self.batch_size:
            row, inputs, k0 = self._queue.popleft()
            k1 = min(len(inputs), k0 + self.batch_size - size)
            parts.append(inputs[k0:k1])
            pieces.append(Piece(row, k0, k1, size))
            size += k1 - k0
            if k1 < len(inputs):  # the rest of this video starts the next batch
                self._queue.appendleft((row, inputs, k1))
        self.pending_clips -= size
        return np.concatenate(parts), pieces  # parts of (k, ...) -> (B, ...)

    def put(
        self, pieces: list[Piece], feats: np.ndarray
    ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Scatter ``(B, D)`` features back; return the rows now complete as
        ``(row, data (K, D), valid (K,), times (K, 2))``."""
        finished = []
        for p in pieces:
            r = self._rows[p.row]
            r.data[p.k0 : p.k1] = feats[p.offset : p.offset + p.k1 - p.k0]
            r.filled += p.k1 - p.k0
            if r.filled == len(r.data):
                del self._rows[p.row]
                finished.append((p.row, r.data, r.valid, r.times))
        return finished


@dataclass
class ChunkedRowWriter:
    """Buffers finished rows and errors of one feature set; writes whole chunks at once.

    A chunk is written as soon as every row of it that this run plans to process is
    finished (one ``write_rows`` instead of one rewrite per row). Everything buffered is
    written when ``flush_s`` seconds passed since the last write, when more than
    ``max_rows`` rows wait, and at the end. ``done`` is set by the store only after the
    data is durable, so a crash loses at most the buffered rows.

    Args:
        writer: an open :class:`~store.FeatureWriter`.
        planned: rows this run will process in this feature set.
        chunk_rows: rows per storage chunk.
        flush_s: longest time finished rows wait.
        max_rows: most rows buffered before a flush.
    """

    writer: FeatureWriter
    planned: np.ndarray
    chunk_rows: int
    flush_s: float = 60.0
    max_rows: int = 1024
    rows_written: int = 0
    errors_written: int = 0
    writes: int = 0
    seconds: float = 0.0
    _left: collections.Counter = field(default_factory=collections.Counter)
    _ok: dict = field(default_factory=dict)
    _err: dict = field(default_factory=dict)
    _since: float | None = None  # when the buffer last went from empty to non-empty

    def __post_init__(self) -> None:
        self._left.update((np.asarray(self.planned, dtype=np.int64) // self.chunk_rows).tolist())

    def add(self, row: int, data: np.ndarray, valid: np.ndarray, times: np.ndarray) -> bool:
        """Buffer a finished row; True if that caused a write."""
        self._ok[row] = (data, valid, times)
        return self._finished(row)

    def add_error(self, row: int, message: str) -> bool:
        """Buffer a failed row's error text; True if that caused a write."""
        self._err[row] = message
        return self._finished(row)

    def _finished(self, row: int) -> bool:
        if self._since is None:
            self._since = time.monotonic()
        chunk = row // self.chunk_rows
        self._left[chunk] -= 1
        if self._left[chunk] == 0:
            self.flush(chunk)
            return True
        if self.buffered > self.max_rows or time.monotonic() - self._since > self.flush_s:
            self.flush()
            return True
        return False

    def flush(self, chunk: int | None = None) -> None:
        """Write the buffered rows of ``chunk`` (None: all of them)."""
        start = time.perf_counter()
        ok = sorted(r for r in self._ok if chunk is None or r // self.chunk_rows == chunk)
        err = sorted(r for r in self._err if chunk is None or r // self.chunk_rows == chunk)
        if ok:
            items = [self._ok.pop(r) for r in ok]
            self.writer.write_rows(
                np.asarray(ok),
                np.stack([i[0] for i in items]),
                valid=np.stack([i[1] for i in items]),
                times=np.stack([i[2] for i in items]),
            )
        if err:
            self.writer.write_errors(np.asarray(err), [self._err.pop(r) for r in err])
        self.rows_written += len(ok)
        self.errors_written += len(err)
        self.writes += bool(ok or err)
        if not self.buffered:
            self._since = None
        self.seconds += time.perf_counter() - start

    @property
    def buffered(self) -> int:
        return len(self._ok) + len(self._err)
