"""``python -m store.verify PATH``: check that a store is whole and consistent.

Checks the schema version and class list, that every array has at least ``n_videos`` rows,
that video ids are unique, labels are 0/1, and for each feature set that every ``done`` row's
chunk file exists and decodes to finite values, and that no partial (temporary) chunk file is
left over. Prediction runs must have the right class count and finite scores.
Exits 0 when the store is valid, 1 with a list of problems otherwise, 2 if it is no store.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from store._column import swap_interrupted
from store._durable import partial_files
from store._lock import is_locked
from store.cli import run_command
from store.feature_store import LABEL_CHUNK, VIDEO_CHUNK, FeatureStore, id_hashes
from store.schema import FeatureSetSpec


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _chunk_file(arr_dir: Path, chunk: int, ndim: int) -> Path:
    """Path of the chunk holding rows ``chunk * chunk_rows ...`` (one chunk across other axes)."""
    return arr_dir / "c" / str(chunk) / Path(*["0"] * (ndim - 1)) if ndim > 1 else arr_dir / "c" / str(chunk)


def _data_chunk_problem(path: Path, spec: FeatureSetSpec) -> str | None:
    """Size checks that catch a truncated data chunk whatever its codec does with it."""
    expected = spec.chunk_rows * spec.clips * spec.dim * np.dtype(spec.dtype).itemsize
    size = path.stat().st_size
    if spec.compressor == "none":
        if size != expected:
            return f"is {size} bytes, expected {expected} (truncated?)"
        return None
    head = path.read_bytes()[:16]
    if len(head) < 16:
        return f"is {size} bytes, too short for a Blosc header"
    nbytes, cbytes = int.from_bytes(head[4:8], "little"), int.from_bytes(head[12:16], "little")
    if nbytes != expected or cbytes != size:
        return f"is {size} bytes but its Blosc header says {cbytes} (truncated?)"
    return None


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` row ranges of ``size`` rows covering ``0..n``."""
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _duplicate_ids(fs: FeatureStore) -> bool:
    """Whether two rows share an id: 64-bit hashes chunk by chunk (8 bytes a row), then the
    rows whose hashes collide are compared by their actual ids."""
    ids = fs.root["videos"]["id"]
    hashes = np.concatenate([id_hashes(np.asarray(ids[a:b])) for a, b in _blocks(fs.n_videos, VIDEO_CHUNK)]
                            or [np.zeros(0, np.uint64)])
    order = np.argsort(hashes, kind="stable")
    same = hashes[order[1:]] == hashes[order[:-1]]
    if not same.any():
        return False
    suspects = np.unique(np.concatenate([order[1:][same], order[:-1][same]]))  # rows of colliding hashes
    values = np.asarray(ids.get_orthogonal_selection(suspects)).astype(object)
    return len(set(values)) < len(values)


def verify_store(path: str | Path) -> VerifyReport:
    """Run every check; raises StoreError only if ``path`` is not a store at all."""
    fs = FeatureStore.open(path, "r")
    rep = VerifyReport()
    n, c = fs.n_videos, len(fs.classes)
    present = {name for name, _ in fs.root["videos"].arrays()}
    for name in sorted(set(fs.columns) - present):
        rep.problems.append(f"videos/{name} is missing" + (
            "; a replacement of it was interrupted: open the store for writing (e.g. rerun store.split) "
            "to finish it" if swap_interrupted(fs.path, name) else ""))
    for name, arr in fs.root["videos"].arrays():
        if arr.shape[0] < n:
            rep.problems.append(f"videos/{name} has {arr.shape[0]} rows, fewer than n_videos={n}")
    if "id" in fs.root["videos"] and fs.root["videos"]["id"].shape[0] >= n and _duplicate_ids(fs):
        rep.problems.append("video ids are not unique")
    lab = fs.root["labels"]
    if lab.shape[0] < n or lab.shape[1] != c:
        rep.problems.append(f"labels has shape {lab.shape}; expected ({n}, {c})")
    elif any((np.asarray(lab[a:b]) > 1).any() for a, b in _blocks(n, LABEL_CHUNK)):  # uint8: 0/1 <=> <= 1
        rep.problems.append("labels hold values other than 0 and 1")
    for name in fs.feature_sets():
        _verify_feature_set(fs, name, rep)
    for run in fs.prediction_runs():
        s = fs.root[f"predictions/{run}"]["scores"]
        if s.ndim != 2 or s.shape[1] != c or s.shape[0] > n:
            rep.problems.append(f"predictions/{run}/scores has shape {s.shape}; expected (<= {n}, {c})")
        elif not all(np.isfinite(np.asarray(s[a:b])).all() for a, b in _blocks(s.shape[0], LABEL_CHUNK)):
            rep.problems.append(f"predictions/{run}/scores holds NaN or inf")
    for sub in ("features", "predictions"):
        for p in (fs.path / sub).glob(".tmp-*"):
            rep.notes.append(f"{sub}/{p.name} is an abandoned temporary group (safe to delete)")
    return rep


def _verify_feature_set(fs: FeatureStore, name: str, rep: VerifyReport) -> None:
    fset = fs.feature_set(name)
    spec, n = fset.spec, fs.n_videos
    expect = {"data": (spec.clips, spec.dim), "valid": (spec.clips,), "times": (spec.clips, 2),
              "done": (), "errors": ()}
    for a, tail in expect.items():
        shape = fset.arrays[a].shape
        if shape[0] < n or tuple(shape[1:]) != tail:
            rep.problems.append(f"features/{name}/{a} has shape {shape}; expected ({n}, {', '.join(map(str, tail))})")
            return
    done = fset.done()
    live = is_locked(fset.path)
    partials = partial_files(fset.path)
    if partials:
        msg = f"features/{name}: {len(partials)} partial chunk file(s), e.g. {partials[0].relative_to(fs.path)}"
        (rep.notes if live else rep.problems).append(msg + (" (a writer is running)" if live else
                                                           "; rerun the writer to clean up"))
    bad_rows: list[int] = []
    for ch in np.unique(np.flatnonzero(done) // fset.chunk_rows):
        missing = [a for a in ("data", "valid")
                   if not _chunk_file(fset.path / a, int(ch), fset.arrays[a].ndim).is_file()]
        for a in missing:
            rep.problems.append(f"features/{name}/{a}: chunk {ch} is missing but holds done rows")
        if missing:
            continue
        problem = _data_chunk_problem(_chunk_file(fset.path / "data", int(ch), 3), spec)
        if problem:
            rep.problems.append(f"features/{name}/data: chunk {ch} {problem}")
            continue
        start = int(ch) * fset.chunk_rows
        stop = min(start + fset.chunk_rows, n)
        try:
            data = np.asarray(fset.arrays["data"][start:stop])
            np.asarray(fset.arrays["valid"][start:stop])
            np.asarray(fset.arrays["times"][start:stop])
        except Exception as exc:  # a damaged chunk: zarr/numcodecs raise many types
            rep.problems.append(f"features/{name}: chunk {ch} cannot be read ({type(exc).__name__}: {exc})")
            continue
        rows_done = done[start:stop]
        finite = np.isfinite(data.reshape(len(data), -1)).all(axis=1)
        bad_rows += list(np.flatnonzero(rows_done & ~finite) + start)
    if bad_rows:
        rep.problems.append(f"features/{name}: {len(bad_rows)} done row(s) hold NaN/inf, e.g. row {bad_rows[0]}")
    n_err = len(fset.errors())
    rep.notes.append(f"features/{name}: {int(done.sum())}/{n} rows done, {n_err} with errors")


@run_command
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m store.verify", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Exit status: 0 valid, 1 problems found, 2 not a store.")
    ap.add_argument("path", help="the NAME.zarr store directory")
    ap.add_argument("-q", "--quiet", action="store_true", help="print problems only")
    args = ap.parse_args(argv)
    rep = verify_store(args.path)
    if not args.quiet:
        for note in rep.notes:
            print(f"  {note}")
    if rep.ok:
        print(f"{args.path}: OK")
        return 0
    print(f"{args.path}: {len(rep.problems)} problem(s)")
    for p in rep.problems:
        print(f"  - {p}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
