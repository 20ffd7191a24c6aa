"""Replace a whole videos column crash-safely: write the new array aside, then swap it in.

A column longer than one chunk cannot be rewritten atomically in place (each chunk is atomic,
the set of chunks is not), so :func:`replace_column` writes the complete new array, fsync'd,
into a hidden sibling of the store and swaps directories with two renames::

    .NAME.zarr.<column>-new   complete new array (written first)
    videos/<column> -> .NAME.zarr.<column>-old      rename 1
    .NAME.zarr.<column>-new -> videos/<column>      rename 2 (the commit point)
    .NAME.zarr.<column>-old removed

A crash before rename 1 leaves the old column (the new one is debris); between the renames
the column is briefly absent and :func:`repair_column_swaps` (run by every writable open)
renames the complete new array in; after rename 2 only the old copy is left to delete.
Callers hold the store's append lock, so no append resizes the column meanwhile.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from store._durable import DurableLocalStore, fsync_dir

log = logging.getLogger(__name__)


def _aside(store_path: Path, column: str, kind: str) -> Path:
    return store_path.parent / f".{store_path.name}.{column}-{kind}"


def replace_column(store_path: Path, videos: zarr.Group, column: str, values: np.ndarray,
                   compressors: Any) -> None:
    """Swap ``videos/<column>`` for an array holding ``values`` (same shape, chunks and dtype)."""
    old = videos[column]
    assert values.shape == old.shape, (values.shape, old.shape)
    new_dir, old_dir = _aside(store_path, column, "new"), _aside(store_path, column, "old")
    shutil.rmtree(new_dir, ignore_errors=True)
    shutil.rmtree(old_dir, ignore_errors=True)
    dtype = str if old.dtype.kind in "TUO" else old.dtype
    new = zarr.create_array(DurableLocalStore(new_dir), shape=old.shape, chunks=old.chunks, dtype=dtype,
                            fill_value=old.fill_value, compressors=compressors, zarr_format=3)
    new[:] = values
    fsync_dir(new_dir)
    target = store_path / "videos" / column
    os.rename(target, old_dir)
    os.rename(new_dir, target)
    fsync_dir(target.parent)
    shutil.rmtree(old_dir)


def swap_interrupted(store_path: Path, column: str) -> bool:
    """Whether a complete replacement of ``videos/<column>`` waits aside (a crash between the renames)."""
    return _aside(store_path, column, "new").exists() and not (store_path / "videos" / column).exists()


def repair_column_swaps(store_path: Path) -> None:
    """Finish or undo a :func:`replace_column` that a crash interrupted (caller holds the append lock)."""
    for new_dir in store_path.parent.glob(f".{store_path.name}.*-new"):
        column = new_dir.name[len(store_path.name) + 2: -len("-new")]
        target = store_path / "videos" / column
        if not target.exists():
            log.warning("completing the interrupted replacement of videos/%s", column)
            os.rename(new_dir, target)
            fsync_dir(target.parent)
        else:
            shutil.rmtree(new_dir)
    for old_dir in store_path.parent.glob(f".{store_path.name}.*-old"):
        column = old_dir.name[len(store_path.name) + 2: -len("-old")]
        if (store_path / "videos" / column).exists():
            shutil.rmtree(old_dir)
