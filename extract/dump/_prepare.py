"""From a video list to store rows: read the list, create or extend the store, probe headers.

Probing (``probe_video``: the container header, no decoding) runs in the decode worker pool
before rows are created, so the videos table holds ``n_frames``, ``fps``, ``duration`` and
``has_audio`` from the start and extraction needs one container open per video.

A time-based run (``--every``) without ``--max-clips`` fixes its sets' K-max here, before
any set is created (:func:`fix_max_clips`): an existing time-based set of the run keeps its
K; otherwise the list's headers are probed first (and reused by :func:`prepare_store`) and
K-max is the clip count of the longest video, at most ``AUTO_MAX_CLIPS``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from extract.dump.settings import AUTO_MAX_CLIPS, ExtractSettings
from extract.dump.worker import DecodePool, DecodeTask
from extract.inputs import CLASS_FILE_NAMES, VideoList, read_video_list
from extract.media.sampling import EVERY, time_windows
from store import FeatureSetSpec, FeatureStore
from store.errors import ClassMismatch, DuplicateVideoId

log = logging.getLogger(__name__)

#: Class list of a store made from unlabelled videos (a folder without --classes):
#: one placeholder class, every label row all zero.
UNLABELLED_CLASSES = ("unlabelled",)


def open_video_list(
    source: str | os.PathLike,
    *,
    store: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
) -> VideoList:
    """Read a video list; without an explicit class list, label names are checked against
    the classes of an existing ``store`` (so a CSV need not name every class)."""
    source = Path(os.path.abspath(source))  # extract.inputs doubles a relative folder's paths
    explicit = classes is not None or (
        source.is_file() and any((source.parent / n).is_file() for n in CLASS_FILE_NAMES)
    )
    if not explicit and store is not None and (Path(store) / "zarr.json").is_file():
        classes = FeatureStore.open(store, "r").classes
    return read_video_list(source, root=root, classes=classes)


def probe_table(
    videos: pd.DataFrame,
    *,
    workers: int,
    timeout_s: float,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """``videos`` (id, path, split) plus n_frames, fps, duration, has_audio read from headers.

    Unreadable files keep n_frames -1 (their error is recorded when extraction reaches them).
    ``progress(done, total)`` is called after each video.
    """
    out = videos[["id", "path", "split"]].reset_index(drop=True).copy()
    out["n_frames"], out["fps"], out["duration"], out["has_audio"] = -1, np.nan, np.nan, False
    tasks = [DecodeTask(i, p, probe_only=True) for i, p in enumerate(out["path"])]
    bad = 0
    with DecodePool([], min(workers, len(tasks)), timeout_s=timeout_s) as pool:
        for i, res in enumerate(pool.imap_unordered(tasks), 1):
            if res.info:
                for k, v in res.info.items():
                    out.at[res.row, k] = v
            else:
                bad += 1
            if progress:
                progress(i, len(tasks))
    if bad:
        log.warning("%d of %d videos could not be probed; they will get error rows", bad, len(out))
    return out


def _probed_or_probe(
    videos: pd.DataFrame, probed: pd.DataFrame | None, **kwargs
) -> pd.DataFrame:
    """``probe_table(videos)``, taken from ``probed`` (an earlier probe) when it has every id."""
    if probed is not None and videos["id"].isin(probed["id"]).all():
        return probed.set_index("id", drop=False).loc[videos["id"]].reset_index(drop=True)
    return probe_table(videos, **kwargs)


def fix_max_clips(
    settings: ExtractSettings,
    path: str | os.PathLike,
    videos: VideoList,
    *,
    workers: int = 1,
    timeout_s: float = 120.0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ExtractSettings, pd.DataFrame | None]:
    """Settings with ``max_clips`` fixed for a time-based run (unchanged otherwise).

    K-max is ``settings.max_clips`` if given; else the K of a time-based set of the run that
    the store at ``path`` already has (K is fixed when a set is created); else the most
    clips any video of the list gives (clips of one frame, the shortest a backbone takes:
    an upper bound for every backbone of the run), at most :data:`AUTO_MAX_CLIPS`. Videos
    with more clips than K-max are evenly thinned to it.

    Returns:
        The settings and the probed headers of the list's videos not yet in the store
        (for :func:`prepare_store`; None when nothing was probed).
    """
    if settings.every is None or settings.max_clips is not None:
        return settings, None
    names = [c.set_name or c.default_set_name for c in settings.choices()]
    known = pd.DataFrame(columns=["id", "n_frames", "fps"])
    if (Path(path) / "zarr.json").is_file():
        fs = FeatureStore.open(path, "r")
        for name in set(names) & set(fs.feature_sets()):
            clips = fs.feature_set(name).spec.sampling.get("clips", {})
            if isinstance(clips, dict) and clips.get("mode") == EVERY:
                log.info("time-based set %s keeps its K-max of %d clips", name, clips["num_clips"])
                return dataclasses.replace(settings, max_clips=int(clips["num_clips"])), None
        known = fs.videos(["id", "n_frames", "fps"])
        known = known[known["id"].isin(videos.videos["id"])]
    new = videos.videos[~videos.videos["id"].isin(known["id"])]
    probed = probe_table(new, workers=workers, timeout_s=timeout_s, progress=progress) if len(new) else None
    n_frames = np.concatenate([t["n_frames"].to_numpy(np.float64) for t in (known, probed) if t is not None])
    rates = np.concatenate([t["fps"].to_numpy(np.float64) for t in (known, probed) if t is not None])
    ok = (n_frames > 0) & (rates > 0)  # unreadable videos (-1, NaN) get error rows, not clips
    counts = [time_windows(n / fps, settings.every, 1.0 / (settings.fps or fps))
              for n, fps in zip(n_frames[ok], rates[ok])]
    longest = max(counts, default=AUTO_MAX_CLIPS)
    kmax = min(longest, AUTO_MAX_CLIPS)
    if longest > kmax:
        log.warning(
            "--every %g: the longest video gives %d clips; K-max is capped at %d (videos with more clips are "
            "evenly thinned to %d); pass --max-clips N to keep more", settings.every, longest, kmax, kmax)
    else:
        log.info("--every %g: K-max %d clips (the longest video of the list)", settings.every, kmax)
    return dataclasses.replace(settings, max_clips=int(kmax)), probed


def prepare_store(
    path: str | os.PathLike,
    videos: VideoList,
    *,
    workers: int = 1,
    timeout_s: float = 120.0,
    progress: Callable[[int, int], None] | None = None,
    probed: pd.DataFrame | None = None,
) -> tuple[FeatureStore, pd.DataFrame]:
    """Open the store at ``path`` (creating it if missing) and add the list's new videos.

    A new store gets the list's classes (or :data:`UNLABELLED_CLASSES`); it is built in a
    hidden folder and renamed into place, so shard processes starting together on a new
    store cannot half-create it. An existing store must have the same classes. ``probed``:
    headers already read by :func:`probe_table` (from :func:`fix_max_clips`), not read again.

    Returns:
        The writable store and ``targets``: the list's rows (index) with their ``path``.
    """
    path = Path(path)
    classes = list(videos.classes) or list(UNLABELLED_CLASSES)
    labels = videos.label_matrix() if videos.classes else np.zeros((len(videos), 1), np.uint8)
    if not (path / "zarr.json").is_file():
        table = _probed_or_probe(videos.videos, probed, workers=workers, timeout_s=timeout_s, progress=progress)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        new = FeatureStore.create(tmp, classes=classes)
        new.append_videos(table, labels)
        try:
            os.rename(tmp, path)
            log.info("created %s with %d videos and %d classes", path, len(table), len(classes))
        except OSError:  # another shard process created it first
            shutil.rmtree(tmp, ignore_errors=True)
    fs = FeatureStore.open(path, "a")
    if fs.classes != classes:
        raise ClassMismatch(
            f"the video list has {len(classes)} classes but {path} has {len(fs.classes)} "
            f"(first difference: {_first_difference(classes, fs.classes)}); pass --classes "
            "with the store's class list, or use a new --store"
        )
    for _ in range(5):  # other shard processes may append the same videos at the same time
        missing = ~videos.videos["id"].isin(set(fs.video_ids())).to_numpy()
        if not missing.any():
            break
        table = _probed_or_probe(
            videos.videos[missing], probed, workers=workers, timeout_s=timeout_s, progress=progress
        )
        try:
            rows = fs.append_videos(table, labels[missing])
            log.info(
                "appended %d new videos to %s (rows %d..%d)", len(rows), path, rows[0], rows[-1]
            )
        except DuplicateVideoId:
            fs.refresh()
    rows = fs.rows_of(videos.videos["id"].tolist())
    return fs, pd.DataFrame(
        {"path": videos.videos["path"].to_numpy()}, index=pd.Index(rows, name="row")
    )


def check_feature_sets(
    path: str | os.PathLike, outputs: Sequence[tuple[str, FeatureSetSpec]]
) -> None:
    """Refuse early (before any probing) if an existing store holds one of the sets with
    another spec: creates the sets that are missing, raises FeatureSetExists otherwise.

    ``outputs`` are ``(set name, spec)`` pairs (``FeatureSetJob.outputs``)."""
    if (Path(path) / "zarr.json").is_file():
        fs = FeatureStore.open(path, "a")
        pairs = list(outputs)
        have = set(fs.feature_sets())
        pairs.sort(key=lambda p: p[0] not in have)  # existing sets first: refuse before creating
        for name, spec in pairs:
            fs.create_feature_set(name, spec)


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"class {i} is {x!r} vs {y!r}"
    return f"{min(len(a), len(b))} shared classes, then one list ends"
