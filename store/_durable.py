"""A Zarr ``LocalStore`` whose writes are atomic *and* durable.

zarr-python's ``LocalStore`` already writes each key to a temporary file and renames it into
place, so a reader never sees half a chunk. It does not ``fsync``, so after a power loss a
renamed chunk may still be empty. The store marks a row ``done`` only after the row's chunk
is on disk, which needs the fsync; this subclass adds it (file, then directory).

Temporary files end in ``.partial``; a killed writer can leave some behind.
:func:`remove_partials` deletes them (writers do so when they take their lock) and
``store.verify`` reports any it finds.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

PARTIAL_SUFFIX = ".partial"


def _durable_put(path: Path, value: Buffer, exclusive: bool = False) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
    try:
        with tmp.open("wb") as f:
            n = f.write(value.as_buffer_like())
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # raises FileExistsError if the key exists
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return n


def fsync_dir(path: Path) -> None:
    """fsync a file or directory by path (a directory: so that renames in it are durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableLocalStore(LocalStore):
    """``LocalStore`` with fsync'd atomic writes (write to a temporary name, fsync, rename)."""

    async def _set(self, key: str, value: Buffer, exclusive: bool = False) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(_durable_put, self.root / key, value, exclusive=exclusive)


def partial_files(root: Path) -> list[Path]:
    """Every leftover temporary file under ``root`` (zarr's own or ours)."""
    return sorted(p for p in root.rglob(f"*{PARTIAL_SUFFIX}") if p.is_file())


def remove_partials(root: Path) -> int:
    """Delete leftover temporary files under ``root``; returns how many were removed."""
    files = partial_files(root)
    for p in files:
        p.unlink(missing_ok=True)
    return len(files)
