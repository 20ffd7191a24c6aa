"""``python -m store.merge OUT IN1 IN2 ...``: join stores written side by side into one.

When the nodes of a cluster cannot share one store, each fills its own (``extract.run
--shard i/n --store part_i.zarr``); this command joins them::

    python -m store.merge all.zarr part_0.zarr part_1.zarr part_2.zarr

The inputs must have the same class list and the same feature sets, made the same way (equal
spec provenance: backbone, weights, sampling, K, D, dtype; storage chunking may differ). Rows
are taken in input order and de-duplicated by video id: a video listed in several inputs is
one row of the output, whose features come from the first input where that row is done (a
row that failed everywhere keeps the first error). A video whose labels or split differ
between inputs is a conflict: the merge stops with one line naming it, before writing.
Prediction runs and faiss indexes are results of a store, not inputs: they are not carried
over (rerun ``heads.train`` / the index build on the merged store).

Crash safety: everything is written into ``OUT.merging`` (videos first, then each feature
set a storage chunk at a time through the store's crash-safe writer), checked with
``store.verify``, and only then renamed to ``OUT`` in one atomic step. An interrupted merge
leaves ``OUT.merging``; running the same command again resumes it (rows already copied are
not copied again). Memory: the video tables and per-row masks of the inputs (a few bytes per
row), plus one block of features.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from store._exchange import Progress, no_progress
from store.cli import run_command
from store.errors import SchemaMismatch, StoreError
from store.feature_set import FeatureSet
from store.feature_store import FeatureStore
from store.schema import FeatureSetSpec
from store.verify import verify_store

log = logging.getLogger(__name__)

BLOCK_ROWS = 1 << 16  # videos appended, and labels fingerprinted, this many rows at a time
SUFFIX = ".merging"
_SOURCE, _ROW = "_merge_source", "_merge_row"


@dataclass
class MergeReport:
    """What a merge did.

    Attributes:
        rows: videos in the output.
        duplicates: input rows dropped because an earlier input had the same video id.
        done: feature set -> rows with features in the output.
        errors: feature set -> rows that failed in every input that had them.
    """

    rows: int = 0
    duplicates: int = 0
    done: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)


def _label_fingerprints(fs: FeatureStore) -> np.ndarray:
    """``(N,)`` int64 fingerprint of each row's multi-hot labels, read ``BLOCK_ROWS`` at a time."""
    weights = np.random.default_rng(0).integers(1, 2**62, size=len(fs.classes), dtype=np.int64)
    out = np.empty(fs.n_videos, dtype=np.int64)
    for start in range(0, fs.n_videos, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, fs.n_videos)
        block = fs.labels(np.arange(start, stop)).astype(np.int64)
        with np.errstate(over="ignore"):  # wrap-around is fine for a fingerprint
            out[start:stop] = block @ weights
    return out


def _check_sets(inputs: list[FeatureStore]) -> dict[str, FeatureSetSpec]:
    """The feature sets every input must have, with the first input's specs."""
    first = inputs[0]
    specs = {name: first.feature_set(name).spec for name in first.feature_sets()}
    for fs in inputs[1:]:
        if sorted(fs.feature_sets()) != sorted(specs):
            raise SchemaMismatch(f"{fs.path} has feature sets {fs.feature_sets() or 'none'} but {first.path} has "
                                 f"{sorted(specs) or 'none'}; merge stores made with the same backbones")
        for name, spec in specs.items():
            theirs = fs.feature_set(name).spec
            if theirs.provenance() != spec.provenance():
                diff = sorted(k for k, v in spec.provenance().items() if theirs.provenance().get(k) != v)
                raise SchemaMismatch(f"feature set {name!r} of {fs.path} was made differently from {first.path}'s "
                                     f"(differs in: {', '.join(diff)}); its features cannot be mixed")
    return specs


def _plan_rows(inputs: list[FeatureStore]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The output's video table (input order, first occurrence of each id) and the later copies.

    The table holds every video column plus the source input and row of each output row; the
    later copies of duplicated ids (``id``, source, row, in input order) are the other places a
    row's features may come from.
    """
    tables, fingerprints = [], []
    for i, fs in enumerate(inputs):
        t = fs.videos()
        t[_SOURCE], t[_ROW] = i, np.arange(len(t))
        tables.append(t)
        fingerprints.append(_label_fingerprints(fs))
    table = pd.concat(tables, ignore_index=True, sort=False)
    table["id"] = table["id"].astype(str)
    labels = np.concatenate(fingerprints) if fingerprints else np.zeros(0, np.int64)
    first = ~table["id"].duplicated(keep="first").to_numpy()
    if not first.all():
        # Every later occurrence must agree with the first one on labels and split.
        owner = table.loc[first].reset_index().set_index("id")["index"]
        dup = np.flatnonzero(~first)
        ref = owner.loc[table["id"].to_numpy()[dup]].to_numpy()
        split = table["split"].astype(str).to_numpy() if "split" in table else np.full(len(table), "")
        bad = (labels[dup] != labels[ref]) | (split[dup] != split[ref])
        if bad.any():
            d, r = dup[np.argmax(bad)], ref[np.argmax(bad)]
            what = "labels" if labels[d] != labels[r] else "split"
            raise SchemaMismatch(
                f"video {table['id'].iloc[d]!r} has different {what} in {inputs[table[_SOURCE].iloc[r]].path} and "
                f"{inputs[table[_SOURCE].iloc[d]].path}; fix one of them before merging ({int(bad.sum())} conflict(s))")
    keep = table.loc[first].reset_index(drop=True)
    return keep, table.loc[~first, ["id", _SOURCE, _ROW]].reset_index(drop=True)


def _append_videos(out: FeatureStore, inputs: list[FeatureStore], plan: pd.DataFrame,
                   progress: Progress) -> None:
    """Append the planned videos with their labels, ``BLOCK_ROWS`` at a time (resumes after a crash)."""
    have = out.n_videos
    if have and not np.array_equal(out.video_ids()[-1:], plan["id"].to_numpy()[have - 1:have]):
        raise StoreError(f"{out.path} does not hold the first {have} videos this merge would write; "
                         "delete it and run the merge again")
    columns = [c for c in plan.columns if c not in (_SOURCE, _ROW)]
    starts = range(have, len(plan), BLOCK_ROWS)
    for start in progress(starts, desc="videos", unit="block", total=len(starts)):
        block = plan.iloc[start:start + BLOCK_ROWS]
        labels = np.zeros((len(block), len(out.classes)), np.uint8)
        for i, fs in enumerate(inputs):
            mine = np.flatnonzero(block[_SOURCE].to_numpy() == i)
            if len(mine):
                labels[mine] = fs.labels(block[_ROW].to_numpy()[mine])
        out.append_videos(block[columns].reset_index(drop=True), labels)


def _sources(fsets: list[FeatureSet], plan: pd.DataFrame,
             later: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output row: the input (-1: none) and input row to copy features from, and the error text.

    A row takes its features from the first input where it is done; a row done nowhere keeps
    the first error any input recorded for it ("" when it was never tried).
    """
    n = len(plan)
    src, row = plan[_SOURCE].to_numpy().copy(), plan[_ROW].to_numpy().copy()
    done = [fset.done() for fset in fsets]
    errors = [fset.errors() for fset in fsets]
    is_done = np.zeros(n, bool)
    message = np.full(n, "", dtype=object)
    for i in range(len(fsets)):
        mine = np.flatnonzero(src == i)
        is_done[mine] = done[i][row[mine]]
        out_of = np.full(len(done[i]), -1)
        out_of[row[mine]] = mine
        for r, text in errors[i].items():
            if out_of[r] >= 0:
                message[out_of[r]] = text
    out_row = pd.Series(np.arange(n), index=plan["id"].to_numpy())
    for vid, s, r in zip(later["id"], later[_SOURCE], later[_ROW]):
        o = out_row[vid]
        if is_done[o]:
            continue
        if done[s][r]:
            src[o], row[o], is_done[o], message[o] = s, r, True, ""
        elif not message[o] and int(r) in errors[s]:
            message[o] = errors[s][int(r)]
    src[~is_done] = -1
    return src, row, message


def _copy_set(out: FeatureStore, name: str, spec: FeatureSetSpec, fsets: list[FeatureSet],
              plan: pd.DataFrame, later: pd.DataFrame, progress: Progress) -> tuple[int, int]:
    """Copy one feature set into ``out``, a storage chunk at a time; rows already done are skipped.

    Returns:
        ``(rows with features, rows with an error)`` in the output.
    """
    target = out.create_feature_set(name, spec)
    src, row, message = _sources(fsets, plan, later)
    todo = np.zeros(len(plan), bool)
    todo[target.pending()] = True
    c = spec.chunk_rows
    starts = range(0, len(plan), c)
    with target.writer() as w:
        for start in progress(starts, desc=name, unit="chunk", total=len(starts)):
            rows = np.arange(start, min(start + c, len(plan)))
            rows = rows[todo[rows]]
            failed = rows[(src[rows] < 0) & (message[rows] != "")]
            if len(failed):
                w.write_errors(failed, list(message[failed]))
            for i, fset in enumerate(fsets):
                mine = rows[src[rows] == i]
                mine = mine[np.argsort(row[mine])]  # ascending input rows: contiguous reads
                if len(mine):
                    data, valid = fset.read(row[mine], dtype=None)
                    w.write_rows(mine, data, valid, fset.read_times(row[mine]))
    return int((src >= 0).sum()), int(((src < 0) & (message != "")).sum())


def merge_stores(out: str | os.PathLike[str], inputs: list[str | os.PathLike[str]], *,
                 progress: Progress = no_progress) -> MergeReport:
    """Join ``inputs`` into a new store ``out`` (see the module docstring for the rules).

    Raises:
        StoreError: ``out`` exists, an input is missing or repeated, or the inputs disagree
            (classes, feature sets, a video's labels); nothing is written in those cases.
    """
    out = Path(out)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise StoreError("give at least one input store")
    resolved = [p.resolve() for p in paths]
    if len(set(resolved)) != len(resolved):
        raise StoreError("an input store is listed twice")
    if out.resolve() in resolved:
        raise StoreError(f"the output {out} is one of the inputs; write the merge to a new path")
    if out.exists():
        raise StoreError(f"{out} exists; merge into a new path (or delete it first)")
    stores = [FeatureStore.open(paths[0])]
    stores += [FeatureStore.open(p, classes=stores[0].classes) for p in paths[1:]]
    specs = _check_sets(stores)
    plan, later = _plan_rows(stores)
    work = out.with_name(out.name + SUFFIX)
    manifest = {"inputs": [str(p) for p in resolved]}
    if work.exists():
        target = FeatureStore.open(work, "a", classes=stores[0].classes)
        if target.root.attrs.get("merge", {}).get("inputs") != manifest["inputs"]:
            raise StoreError(f"{work} is left from a merge of other inputs; delete it or rerun that merge")
        log.info("resuming the merge in %s (%d of %d videos there)", work, target.n_videos, len(plan))
    else:
        target = FeatureStore.create(work, classes=stores[0].classes)
        target.root.attrs["merge"] = {**manifest, "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    _append_videos(target, stores, plan, progress)
    report = MergeReport(rows=len(plan), duplicates=len(later))
    for name, spec in specs.items():
        fsets = [fs.feature_set(name) for fs in stores]
        report.done[name], report.errors[name] = _copy_set(target, name, spec, fsets, plan, later, progress)
    check = verify_store(work)
    if not check.ok:
        raise StoreError(f"the merged store {work} failed verification: {check.problems[0]}")
    os.rename(work, out)  # the commit point: OUT appears complete or not at all
    return report


@run_command(path_errors=True, interrupted="rerun the same command to resume the merge")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m store.merge", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the merged NAME.zarr to create (must not exist)")
    ap.add_argument("inputs", nargs="+", help="the stores to join, in order (the first copy of a video wins)")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    report = merge_stores(args.out, args.inputs, progress=tqdm)
    print(f"{args.out}: {report.rows} videos from {len(args.inputs)} stores "
          f"({report.duplicates} duplicate ids dropped)")
    for name in report.done:
        print(f"  {name}: {report.done[name]} rows with features, {report.errors[name]} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
