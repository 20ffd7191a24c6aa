"""What ``store.export`` and ``store.import`` share: id encoding, atomic files, the progress record.

Video ids may hold ``/`` or other characters that file systems and HDF5 refuse in names, so
both commands name files (``ID.npy``) and HDF5 groups (``/ID/features``) by the *encoded* id:
percent-encoding (``urllib.parse.quote``) of every character except ASCII letters, digits,
``-``, ``_`` and ``.``, and a leading ``.`` written ``%2E`` (no hidden files, no HDF5 ``.``).
``decode_id`` (``urllib.parse.unquote``) gives the id back; plain ids stay as they are.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote, unquote

import numpy as np

from store.errors import StoreError

T = TypeVar("T")
Progress = Callable[..., Iterable]


def encode_id(video_id: str) -> str:
    """A file- and HDF5-safe name for ``video_id`` (reversible by :func:`decode_id`)."""
    name = quote(str(video_id), safe="-_.")
    return "%2E" + name[1:] if name.startswith(".") else name


def decode_id(name: str) -> str:
    """The video id an encoded name stands for."""
    return unquote(name)


def no_progress(it: Iterable[T], **_: Any) -> Iterable[T]:
    """The default ``progress`` wrapper: no bar (commands pass ``tqdm``)."""
    return it


def temp_name(path: Path) -> Path:
    """A unique hidden sibling of ``path`` to write before renaming into place."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path``; on success fsync it and rename it to ``path``."""
    tmp = temp_name(path)
    try:
        with tmp.open(mode, newline=None if "b" in mode else "") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` atomically."""
    with atomic_file(path) as f:
        np.save(f, array)


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` as JSON atomically."""
    with atomic_file(path, "w") as f:
        json.dump(record, f, indent=1, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays and bytes turned into plain JSON types."""
    return json.loads(json.dumps(value, default=_json_default))


class ProgressRecord:
    """The small JSON file that makes an export resumable: which storage chunks are finished.

    It names its source (store, feature set or run, fingerprint, creation time, rows); a rerun
    continues only an export of the very same source into the same place, and refuses one
    whose source changed (the user then picks another output or deletes the old one).
    """

    def __init__(self, path: Path, source: dict[str, Any]) -> None:
        self.path = path
        self.source = jsonable(source)
        self.finished: set[int] = set()

    def load(self) -> bool:
        """Read an earlier record; True if there was one (its finished chunks are kept)."""
        if not self.path.is_file():
            return False
        try:
            old = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return False  # a damaged record: start over
        before = old.get("source") or {}
        if before != self.source:
            changed = ", ".join(k for k in self.source if before.get(k) != self.source[k])
            raise StoreError(f"{self.path} records an export of another source (differs in: {changed}); "
                             f"choose another output or delete the old one")
        self.finished = {int(c) for c in old.get("finished", [])}
        return True

    def mark(self, chunk: int) -> None:
        """Record chunk ``chunk`` as finished (durably)."""
        self.finished.add(int(chunk))
        self.save()

    def save(self) -> None:
        write_json(self.path, {"source": self.source, "finished": sorted(self.finished)})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
