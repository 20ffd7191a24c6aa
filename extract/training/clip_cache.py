"""Decoded training material on disk: each video is decoded once per ``decode_every`` epochs, not every epoch.

::

    <cache root>/<key digest>/key.json      what the content depends on (the digest is its sha256)
                              t<g>_<i>.clip  video i, generation g: what the epochs of g need
                              v_<i>.clip     video i's evaluation clips (the same every epoch)

An entry is one file: ``MAGIC``, a 4-byte header length, a JSON header (name, dtype, shape
and byte range of each array, the payload's length and CRC-32), then the arrays' raw bytes.
It is memory-mapped and its arrays are ``numpy.frombuffer`` views: an example reads only the
frames it takes (the epochs after the first must wait for data less than the model computes).

* **Keyed by content.** The digest hashes everything the entries depend on: the video list
  (path, size and modification time of every file), the data fields of the recipe (clip
  sampling, sizes, scale, crop, modality, flow method and bound, seed, ``decode_every``) and
  the backbone's input. Another list, recipe or replaced file gives another directory: a
  cache is reused only where its content is right, and rebuilt otherwise.
* **Crash-safe.** An entry is written to a temporary name and renamed: a killed run leaves
  whole entries and stray ``*.tmp`` files (removed when the cache opens). Each entry holds a
  CRC-32 of its arrays, checked the first time a process reads the file (again if the file
  changes: inode, size, modification time); an entry that does not read back whole
  (truncated, zeroed, another file, a flipped bit) is logged, deleted and rebuilt, never used.
* **Parallel writers.** One file per entry: DataLoader workers write side by side with no
  shared chunk or lock. One training run per cache directory at a time.
* **Bounded.** The first epoch of a video's generation ``g`` deletes its generation ``g - 1``
  (``extract.training.data``): the cache holds at most one generation per video (two while the
  next one is decoded ahead) (what ``decode_every`` epochs of clips need,
  at most the whole video at the training size) plus the evaluation clips.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Bumped when the layout or the meaning of an entry changes (old caches then miss, never mislead).
CACHE_VERSION = 1
KEY_JSON = "key.json"
MAGIC = b"VFCLIP01"
#: Entries a process keeps mapped after reading them (each map is one of the kernel's per-process
#: memory areas, 65530 by default): a read of a kept entry is a dictionary lookup.
MAPPED = 4096
SUFFIX = ".clip"


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


def encode_entry(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of an entry file (see the module docstring)."""
    specs, chunks, offset = [], [], 0
    for name in sorted(arrays):
        a = np.asarray(arrays[name])  # tobytes() is C order; ascontiguousarray would make 0-d arrays 1-d
        specs.append([name, a.dtype.str, list(a.shape), offset, a.nbytes])
        chunks.append(a.tobytes())
        offset += a.nbytes
    payload = b"".join(chunks)
    header = json.dumps({"arrays": specs, "bytes": len(payload), "crc32": zlib.crc32(payload)}).encode()
    return MAGIC + struct.pack("<I", len(header)) + header + payload


def decode_entry(raw: bytes | mmap.mmap, check: bool = True) -> dict[str, np.ndarray]:
    """The arrays of an entry file's bytes (read-only views); ``check``: verify the CRC-32 too.

    Raises:
        ValueError: the bytes are not a whole entry (wrong magic, short, bad header or checksum).
    """
    if len(raw) < len(MAGIC) + 4 or raw[: len(MAGIC)] != MAGIC:
        raise ValueError("not a clip cache entry")
    (n,) = struct.unpack_from("<I", raw, len(MAGIC))
    start = len(MAGIC) + 4 + n
    header = json.loads(raw[len(MAGIC) + 4 : start])
    size = len(raw) - start
    if size != header["bytes"] or (check and zlib.crc32(memoryview(raw)[start:]) != header["crc32"]):
        raise ValueError(f"{size} of {header['bytes']} bytes, or a checksum mismatch")
    return {name: np.frombuffer(raw, dtype=np.dtype(dtype), count=int(np.prod(shape)), offset=start + offset
                                ).reshape(shape)
            for name, dtype, shape, offset, _ in header["arrays"]}


class ClipCache:
    """One keyed cache directory of entry files (see the module docstring).

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
        self._checked: dict[str, tuple[int, int, int]] = {}  # name -> (inode, size, mtime) read whole here
        self._mapped: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()  # the last MAPPED entries read
        log.info("clip cache %s", self.dir)

    def path(self, name: str) -> Path:
        return self.dir / f"{name}{SUFFIX}"

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """The entry's arrays (read-only), or None when it is missing or does not read back whole (then
        deleted)."""
        arrays = self._mapped.get(name)
        if arrays is not None:  # entries are written once (new content comes under a new name, or via store())
            self._mapped.move_to_end(name)
            return arrays
        path = self.path(name)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                # mapped, not read: an example touches only its own frames; the arrays keep the map alive
                raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if st.st_size else b""
        except FileNotFoundError:
            return None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        try:
            arrays = decode_entry(raw, check=self._checked.get(name) != stamp)
            self._checked[name] = stamp
        except (ValueError, KeyError, TypeError, struct.error) as err:  # json.JSONDecodeError is a ValueError
            log.warning("clip cache entry %s is damaged (%s); decoding the video again", path, err)
            path.unlink(missing_ok=True)
            return None
        self._mapped[name] = arrays
        if len(self._mapped) > MAPPED:
            self._mapped.popitem(last=False)
        return arrays

    def store(self, name: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Write an entry atomically (temporary file, then rename)."""
        path = self.path(name)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(encode_entry(arrays))
        os.replace(tmp, path)
        self._mapped.pop(name, None)

    def drop(self, name: str) -> None:
        """Delete an entry (gone already: nothing to do)."""
        self._mapped.pop(name, None)
        self.path(name).unlink(missing_ok=True)

    def get(self, name: str, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The entry ``name``, built (and stored) when missing."""
        arrays = self.load(name)
        if arrays is None:
            arrays = build()
            self.store(name, arrays)
        return arrays

    def entries(self) -> list[Path]:
        """The entry files (for reports and tests)."""
        return sorted(self.dir.glob(f"*{SUFFIX}"))
