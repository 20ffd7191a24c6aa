"""The demo dataset: deterministic multi-label mp4 clips whose labels live in different modalities.

:func:`make_demo` (the command: ``python -m extract.demo``, :mod:`extract.demo.__main__`)
writes real mp4 files (H.264 yuv420p + AAC mono), about 3 s each like Moments-in-Time,
small frames so a CPU can process hundreds in minutes. Every video has 1 to 4 labels over
21 classes in three families (see :mod:`extract.demo._classes`): appearance (which objects
are on screen, visible in any frame), motion (what a neutral grey carrier does: pairs that
are exact time reversals, invisible in a single frame) and sound (audio-only events).
Distractors, background clutter, frame noise and audio noise grow with ``difficulty``.

Everything is a function of the config: video ``i`` draws from generators seeded with
``(seed, stream, i)``, so a video does not depend on how many others are made (only the
split assignment does), and its labels do not depend on ``size``, ``fps`` or ``difficulty``.
Every class appears once in each run of ``C = 21`` consecutive videos (the first label of
video ``i`` walks a seeded permutation of the classes), so any demo of at least 21 videos
holds every class.

Directory layout (all paths in CSVs are relative to ``DIR``)::

    DIR/
      demo.json      {"generator", "generator_version", "config", "classes", "families",
                      "n_videos", "split_counts", "complete"}
      classes.txt    one class name per line; line i (0-based) is label id i
      labels.csv     every video, Multi-MiT style: no header, ``path,label[,label...]``
      train.csv      the same format, one file per split (a split with no videos has
      val.csv        no file)
      test.csv
      videos.csv     header ``path,labels,split``; labels joined by ``;``
      videos/demo_00000.mp4 ...

The Multi-MiT release's lists (``trainingSet.txt``, ``validationSet.txt``) hold rows
``path,id[,id...]`` with 0-based integer ids into ``moments_categories.txt`` (``name,id``
lines), no header; the demo writes class *names* in the same layout, which
:func:`extract.inputs.read_video_list` reads alike (it accepts both).

Rerunning with the same config reuses every finished file (each mp4 is written under a
hidden temporary name and renamed when complete); a different config in the same
directory raises :class:`~extract.errors.DemoConfigMismatch`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from extract.demo._classes import (
    CLASS_FAMILIES,
    DEMO_CLASSES,
    SPLIT_NAMES,
    STREAM_PICTURE,
    STREAM_SOUND,
    assign_splits,
    video_labels,
)
from extract.demo._render import render_frames
from extract.demo._sound import synthesize_audio
from extract.errors import DemoConfigMismatch, DemoError
from extract.inputs import VideoList, read_video_list
from extract.media.video_writer import AAC_SAMPLE_RATES, write_video
from store.cli import setting_name
from store.errors import SettingsError

logger = logging.getLogger(__name__)

GENERATOR = "videofeat-demo"
GENERATOR_VERSION = 1  # bump when the same config would render different files
DEFAULT_DEMO_DIR = Path("demo")  # relative to the working directory; git-ignored


@dataclass(frozen=True)
class DemoConfig:
    """Settings of a demo dataset; the files are a pure function of them.

    Attributes:
        videos: number of videos.
        seed: base seed (>= 0).
        size: frame height and width in pixels (even, 32-1024).
        fps: frames per second.
        seconds: clip duration (1-60 s); the video has ``round(seconds * fps)`` frames.
        difficulty: 0 (clean) to 1 (clutter, confusable distractors, noise, loud hum).
        sample_rate: audio rate in Hz, one the AAC encoder accepts (>= 8000).
        splits: (train, val, test) fractions summing to 1; train > 0.
    """

    videos: int = 200
    seed: int = 0
    size: int = 112
    fps: float = 25.0
    seconds: float = 3.0
    difficulty: float = 0.5
    sample_rate: int = 16000
    splits: tuple[float, float, float] = (0.7, 0.15, 0.15)

    def __post_init__(self) -> None:
        for name, low in (("videos", 1), ("seed", 0), ("size", 32), ("sample_rate", 8000)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise SettingsError(f"{setting_name(name)} must be a whole number >= {low}, got {value!r}")
        if self.size % 2 or self.size > 1024:
            raise SettingsError(f"{setting_name('size')} must be even and <= 1024 (H.264 yuv420p), "
                             f"got {self.size}")
        if self.sample_rate not in AAC_SAMPLE_RATES:
            raise SettingsError(f"{setting_name('sample_rate')} must be one of {AAC_SAMPLE_RATES} "
                             f"(AAC), got {self.sample_rate}")
        for name, low, high in (("fps", 1.0, 120.0), ("seconds", 1.0, 60.0),
                                ("difficulty", 0.0, 1.0)):
            value = float(getattr(self, name))
            if not low <= value <= high:
                raise SettingsError(f"{setting_name(name)} must be in [{low}, {high}], got {value}")
            object.__setattr__(self, name, value)
        splits = tuple(float(s) for s in self.splits)
        if len(splits) != 3 or min(splits) < 0 or splits[0] <= 0 or abs(sum(splits) - 1) > 1e-6:
            raise SettingsError(f"splits must be 3 fractions (train, val, test) >= 0 "
                             f"summing to 1 with train > 0, got {self.splits}")
        object.__setattr__(self, "splits", splits)

    @property
    def n_frames(self) -> int:
        """Frames per video."""
        return round(self.seconds * self.fps)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["splits"] = list(self.splits)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DemoConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SettingsError(f"DemoConfig.from_dict: unknown keys {unknown}; expected a subset "
                             f"of {sorted(known)} (was this written by a newer version?)")
        return cls(**{k: tuple(v) if k == "splits" else v for k, v in d.items()})


@dataclass(frozen=True)
class DemoManifest:
    """Where the files of a finished demo are.

    Attributes:
        root: the demo directory (CSV paths are relative to it).
        config: the settings it was made with.
        classes: class names in label-id order.
        config_path: ``demo.json``.
        classes_path: ``classes.txt``.
        labels_csv: ``labels.csv`` (all videos, Multi-MiT style, no header).
        videos_csv: ``videos.csv`` (header ``path,labels,split``).
        split_csvs: split name -> ``<split>.csv`` (Multi-MiT style), non-empty splits only.
        n_videos: number of videos.
    """

    root: Path
    config: DemoConfig
    classes: tuple[str, ...]
    config_path: Path
    classes_path: Path
    labels_csv: Path
    videos_csv: Path
    split_csvs: dict[str, Path]
    n_videos: int

    @property
    def families(self) -> dict[str, str]:
        """Class name -> ``"appearance"``, ``"motion"`` or ``"sound"``."""
        return {name: CLASS_FAMILIES[name] for name in self.classes}

    def video_list(self, split: str | None = None) -> VideoList:
        """The demo as a :class:`~extract.inputs.VideoList` (all videos, or one split)."""
        if split is None:
            return read_video_list(self.videos_csv, classes=self.classes_path)
        if split not in self.split_csvs:
            raise DemoError(f"{self.root}: the demo has no {split!r} split; it has "
                            f"{sorted(self.split_csvs)}")
        return read_video_list(self.split_csvs[split], classes=self.classes_path)


@dataclass(frozen=True)
class DemoVideo:
    """One rendered demo video, in memory.

    Attributes:
        index: position in the demo.
        path: path relative to the demo directory (``videos/demo_00000.mp4``).
        labels: class names, in class-id order.
        split: ``"train"``, ``"val"`` or ``"test"``.
        frames: ``(T, H, W, 3)`` uint8 RGB.
        audio: ``(S,)`` float32 mono samples.
        meta: render metadata: ``carrier`` trajectories, motion ``directions``, ``objects``,
            ``noise_sigma`` (see :func:`extract.demo._render.render_frames`) and
            ``sound_events`` (``{"label", "start", "end"}`` in seconds).
    """

    index: int
    path: str
    labels: tuple[str, ...]
    split: str
    frames: np.ndarray
    audio: np.ndarray
    meta: dict


def _video_path(index: int) -> str:
    return f"videos/demo_{index:05d}.mp4"


def render_demo_video(index: int, config: DemoConfig, split: str | None = None) -> DemoVideo:
    """Render demo video ``index`` of ``config`` in memory (what :func:`make_demo` encodes).

    Args:
        index: video number, ``0 <= index < config.videos``.
        config: the demo settings.
        split: its split if already known (else computed from the config).
    """
    if not 0 <= index < config.videos:
        raise ValueError(f"render_demo_video: index {index} outside 0..{config.videos - 1}")
    labels = video_labels(index, config.seed)
    frames, meta = render_frames(
        set(labels), np.random.default_rng([config.seed, STREAM_PICTURE, index]),
        size=config.size, n_frames=config.n_frames, fps=config.fps,
        difficulty=config.difficulty)
    audio, events = synthesize_audio(
        set(labels), np.random.default_rng([config.seed, STREAM_SOUND, index]),
        seconds=config.n_frames / config.fps, sample_rate=config.sample_rate,
        difficulty=config.difficulty)
    meta["sound_events"] = events
    if split is None:
        split = assign_splits(config.videos, config.seed, config.splits)[index]
    return DemoVideo(index, _video_path(index), labels, split, frames, audio, meta)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _csv_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _header(config: DemoConfig, complete: bool, split_counts: dict[str, int]) -> dict:
    return {"generator": GENERATOR, "generator_version": GENERATOR_VERSION,
            "config": config.to_dict(), "classes": list(DEMO_CLASSES),
            "families": {c: CLASS_FAMILIES[c] for c in DEMO_CLASSES},
            "n_videos": config.videos, "split_counts": split_counts, "complete": complete}


def _check_existing(root: Path, config: DemoConfig) -> None:
    meta_path = root / "demo.json"
    if not meta_path.exists():
        if root.exists() and any(root.iterdir()):
            raise DemoError(f"{root} is not empty and holds no demo.json; pass an empty or new "
                            "folder as --out")
        return
    old = json.loads(meta_path.read_text(encoding="utf-8"))
    if old.get("generator_version") != GENERATOR_VERSION:
        raise DemoConfigMismatch(
            f"{root} holds a demo from generator version {old.get('generator_version')} "
            f"(this is {GENERATOR_VERSION}); delete it to regenerate, or pass another --out")
    if old.get("config") != config.to_dict():
        diff = [f"{k}={v!r} (asked {config.to_dict()[k]!r})"
                for k, v in old.get("config", {}).items() if config.to_dict().get(k) != v]
        raise DemoConfigMismatch(
            f"{root} holds a demo made with other settings: {', '.join(diff)}; pass another "
            "--out, the same settings, or delete the folder to regenerate")


def make_demo(out_dir: str | Path = DEFAULT_DEMO_DIR, config: DemoConfig | None = None,
              progress: bool = True) -> DemoManifest:
    """Generate the demo dataset in ``out_dir`` (or finish / reuse one made with ``config``).

    Args:
        out_dir: target folder; created if missing. Must be new, empty, or a demo made with
            the same config.
        config: settings (default :class:`DemoConfig()`).
        progress: show a tqdm bar over the videos.

    Returns:
        The manifest of the finished demo.

    Raises:
        DemoConfigMismatch: ``out_dir`` holds a demo made with a different config.
        DemoError: ``out_dir`` is a non-empty folder that is not a demo.
    """
    config = config or DemoConfig()
    root = Path(out_dir)
    _check_existing(root, config)
    root.mkdir(parents=True, exist_ok=True)
    splits = assign_splits(config.videos, config.seed, config.splits)
    split_counts = {s: splits.count(s) for s in SPLIT_NAMES}
    _write_text(root / "demo.json", json.dumps(_header(config, False, split_counts), indent=2))
    (root / "videos").mkdir(exist_ok=True)
    written = 0
    for index in tqdm(range(config.videos), desc="demo videos", unit="video",
                      disable=not progress):
        path = root / _video_path(index)
        if path.exists():
            continue
        video = render_demo_video(index, config, splits[index])
        write_video(path, video.frames, config.fps, video.audio, config.sample_rate)
        written += 1
    labels = [video_labels(i, config.seed) for i in range(config.videos)]
    rows = [[_video_path(i), *labels[i]] for i in range(config.videos)]
    _write_text(root / "classes.txt", "".join(f"{c}\n" for c in DEMO_CLASSES))
    _write_text(root / "labels.csv", _csv_text(rows))
    for name in SPLIT_NAMES:
        split_rows = [row for row, s in zip(rows, splits) if s == name]
        if split_rows:
            _write_text(root / f"{name}.csv", _csv_text(split_rows))
    table = [["path", "labels", "split"]]
    table += [[_video_path(i), ";".join(labels[i]), splits[i]] for i in range(config.videos)]
    _write_text(root / "videos.csv", _csv_text(table))
    _write_text(root / "demo.json", json.dumps(_header(config, True, split_counts), indent=2))
    logger.info("demo in %s: %d videos (%d written, %d reused)", root, config.videos, written,
                config.videos - written)
    return load_demo(root)


def load_demo(out_dir: str | Path = DEFAULT_DEMO_DIR) -> DemoManifest:
    """The manifest of a finished demo in ``out_dir`` (generates nothing).

    Raises:
        DemoError: no finished demo there.
    """
    root = Path(out_dir)
    meta_path = root / "demo.json"
    if not meta_path.exists():
        raise DemoError(f"{root} holds no demo (no demo.json); make one with "
                        f"`python -m extract.demo --out {root}`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    config = DemoConfig.from_dict(meta["config"])
    if not meta.get("complete"):
        raise DemoError(f"{root} holds an unfinished demo; finish it with the same settings: "
                        f"`python -m extract.demo --out {root} --videos {config.videos} "
                        f"--seed {config.seed} --size {config.size}` (and the other options)")
    split_csvs = {s: root / f"{s}.csv" for s in SPLIT_NAMES if meta["split_counts"].get(s)}
    return DemoManifest(root=root, config=config, classes=tuple(meta["classes"]),
                        config_path=meta_path, classes_path=root / "classes.txt",
                        labels_csv=root / "labels.csv", videos_csv=root / "videos.csv",
                        split_csvs=split_csvs, n_videos=int(meta["n_videos"]))
