"""Decoded training material on disk: each video is decoded once per ``decode_every`` epochs, not every epoch.

::

    <cache root>/<key digest>/key.json      what the content depends on (the digest is its sha256)
                              t<g>_<i>.npz   video i, generation g: what the epochs of g need
                              v_<i>.npz      video i's evaluation clips (the same every epoch)

* **Keyed by content.** The digest hashes everything the entries depend on: the video list
  (path, size and modification time of every file), the data fields of the recipe (clip
  sampling, sizes, scale, crop, modality, flow method and bound, seed, ``decode_every``) and
  the backbone's input. Another list, recipe or replaced file gives another directory: a
  cache is reused only where its content is right, and rebuilt otherwise.
* **Crash-safe.** An entry is written to a temporary name and renamed: a killed run leaves
  whole entries and stray ``*.tmp`` files (removed when the cache opens). Each entry holds a
  CRC-32 of its arrays; an entry that does not read back whole (truncated, zeroed, not a zip)
  is logged, deleted and rebuilt, never used.
* **Parallel writers.** One file per entry: DataLoader workers write side by side with no
  shared chunk or lock. One training run per cache directory at a time.
* **Bounded.** Building generation ``g`` of a video deletes its generation ``g - 1``: the
  cache holds at most one generation per video (what ``decode_every`` epochs of clips need,
  at most the whole video at the training size) plus the evaluation clips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Bumped when the layout or the meaning of an entry changes (old caches then miss, never mislead).
CACHE_VERSION = 1
KEY_JSON = "key.json"
_CRC = "__crc32__"


def files_identity(paths: Sequence[str]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` per file (None for a missing one): a replaced file changes the key."""
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append([str(p), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([str(p), None, None])
    return out


def key_digest(key: Mapping[str, Any]) -> str:
    """The sha256 of the key's canonical JSON (sorted keys), the cache directory's name."""
    text = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _crc(arrays: Mapping[str, np.ndarray]) -> int:
    crc = 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        crc = zlib.crc32(f"{name}:{a.dtype.str}:{a.shape}".encode(), crc)
        crc = zlib.crc32(a.data if a.size else b"", crc)
    return crc


class ClipCache:
    """One keyed cache directory of ``.npz`` entries (see the module docstring).

    Args:
        root: the folder that holds cache directories (created if missing).
        key: JSON-serialisable description of everything the entries depend on.
    """

    def __init__(self, root: str | Path, key: Mapping[str, Any]) -> None:
        self.dir = Path(root) / key_digest(key)[:32]
        self.dir.mkdir(parents=True, exist_ok=True)
        for stray in self.dir.glob("*.tmp"):
            stray.unlink(missing_ok=True)
        key_file = self.dir / KEY_JSON
        if not key_file.is_file():
            tmp = key_file.with_name(f"{KEY_JSON}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True, indent=1))
            os.replace(tmp, key_file)
        log.info("clip cache %s", self.dir)

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.npz"

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays, or None when it is missing or does not read back whole (then deleted)."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            crc = arrays.pop(_CRC)
            if int(crc) != _crc(arrays):
                raise ValueError("checksum mismatch")
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            log.warning("clip cache entry %s is damaged (%s); decoding the video again", path, err)
            path.unlink(missing_ok=True)
            return None
        return arrays

    def store(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Write an entry atomically (temporary file, then rename)."""
        path = self.path(name)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays, **{_CRC: np.uint32(_crc(arrays))})
        os.replace(tmp, path)

    def get(self, name: str, build: Callable[[], dict[str, np.ndarray]], *, replaces: str | None = None
            ) -> dict[str, np.ndarray]:
        """The entry ``name``, built (and stored) when missing; ``replaces`` is deleted once it is stored."""
        arrays = self.load(name)
        if arrays is None:
            arrays = build()
            self.store(name, arrays)
            if replaces is not None:
                self.path(replaces).unlink(missing_ok=True)
        return arrays

    def entries(self) -> list[Path]:
        """The entry files (for reports and tests)."""
        return sorted(self.dir.glob("*.npz"))
