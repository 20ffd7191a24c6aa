"""Read the list of videos to process: list files in the common formats, or a plain folder.

:func:`read_video_list` takes a ``list_format`` (``extract.run --format``): ``mit``, ``kinetics``,
``mmaction``, ``folder``, or ``auto`` (the default), which detects it from the first row and
logs what it found: a folder is ``folder``; a first row with a ``youtube_id`` column is a
Kinetics header; a first row that is one comma-free field ``path N [N ...]`` (a path, then
whitespace-separated integers) is ``mmaction``; anything else is ``mit``. An explicit format
refuses a list that is not in it, naming the line (``not in the kinetics format: ... (it
looks like the mit format: pass --format mit or auto)``).

``mit``, comma-separated, the path first:

* **Multi-MiT style** (no header): ``path,label[,label...]``. Labels are class names or
  integer ids (0-based, into the class list). The Multi-MiT release's ``trainingSet.txt`` /
  ``validationSet.txt`` use ids into ``moments_categories.txt``; the demo writes names.
* **Moments-in-Time v1** (no header): ``path,label,n_agree,n_disagree``
  (``trainingSet.csv``): recognised when *every* row has exactly these four fields, a
  non-integer label and two integer vote counts; the counts are ignored.
* **Table** (header whose first column is ``path``, ``video``, ``video_path``, ``file`` or
  ``filename``): the path column and optionally ``labels`` (or ``label``; several joined by
  ``;``, or, when it is the last column, also in further fields as in Multi-MiT rows),
  ``split`` and ``id`` (the video's id, instead of the one derived from the path); other
  columns are ignored. The demo's ``videos.csv`` is one.

``kinetics``: a header with ``youtube_id,time_start,time_end``, optionally ``label``,
``split``, ``is_cc`` (the official ``label,youtube_id,time_start,time_end,split``).

* **Default** (no ``kinetics_pattern``): the file is the trimmed clip
  ``<youtube_id>_<start:06d>_<end:06d>.mp4``, the name the usual downloaders give (the
  ActivityNet crawler, mmaction2's ``tools/data/kinetics/download.py``, the CVDF copies),
  looked for under ``root`` in this order: ``<split>/<label>/``, ``<split>/<label with _
  for spaces>/`` (crawler layout), ``<split>/`` (CVDF flat layout), ``<label>/``,
  ``<label with _>/``, ``./``; the first that exists wins (the first one is reported when
  none does). ``<split>`` is tried as written and as its normal name
  (``validate``/``validation`` -> ``val``), which is also the row's split.
* **A pattern** (``--kinetics-pattern``) names the one place, a Python format string over
  ``{youtube_id}``, ``{time_start}``, ``{time_end}`` (integer seconds, so ``:06d`` works),
  ``{split}`` and ``{label}`` as written, ``{label_dir}`` (the label with ``_`` for spaces),
  e.g. ``{split}/{label_dir}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4``.
* **Trimming.** A pattern that uses ``{time_start}`` or ``{time_end}`` (and the default)
  names a file the downloader already cut to the segment: clips come from the whole file.
  A pattern without them (``videos/{youtube_id}.mp4``) names the untrimmed video: the row
  gets the window ``[time_start, time_end)`` (columns ``trim_start``, ``trim_end`` of the
  table, then of the store's videos table) and ``extract.run`` samples its clips only from
  the frames inside it (clip times stay seconds of the file). ``time_start >= 0`` and
  ``time_start < time_end`` are checked; a window past the file's end is a row error.

``mmaction`` (mmaction2's list files), one video per line, fields separated by any run of
spaces or tabs (so paths cannot contain spaces): ``path label_id [label_id ...]``, the
``VideoDataset`` form, single- or multi-label, ids into the class list (which is then
needed). mmaction2's other form, the rawframes list ``frame_dir total_frames label_id``,
is told apart by its first field: a row whose path has no video extension (``.mp4``, ...)
or names a folder is a rawframes row, and is refused with one error naming its line: the
decoder reads video files, not folders of frames.

``folder``: every video file under it, recursively (hidden files and folders skipped),
sorted, unlabelled.

Blank rows and rows starting with ``#`` are skipped; fields are stripped of spaces and
trailing empty fields (``a.mp4,x,``) dropped; ``\r\n`` and ``\r`` line ends and a UTF-8 byte
order mark read like a clean file. A file that is not UTF-8 fails with its first bad line.
Paths are relative to ``root``
(default: the list's folder, or the folder itself); absolute paths are kept. A video's
``id`` is its path relative to ``root`` without the extension (POSIX separators), e.g.
``training/arresting/yt-Cl8xbqCv_vU_42``; the path as written is used when it lies outside
``root``. ``split`` is the row's split column, else the ``split`` argument, else guessed
from the file name (a word starting ``train`` -> train, ``val`` -> val, ``test`` -> test:
``trainingSet.csv``, ``k400_val.csv``), else ``"unsplit"``.

Classes: the ``classes`` argument (a list, or a class file), else ``classes.txt`` or
``moments_categories.txt`` beside the CSV, else the sorted label names found in the CSV
(integer ids then need a class list). A token that equals a class name is a name; an
integer token otherwise is an id. A class file has one name per line, or ``name,index``
lines (``moments_categories.txt``), ordered by index.

Every problem raises an :class:`~extract.errors.InputError` subclass whose one-line message
names the file and line.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from extract._list_formats import (
    FORMATS,
    INT_TOKEN,
    PATH_HEADERS,
    SPLIT_ALIASES,
    VIDEO_EXTENSIONS,
    Row,
    check_format,
    check_kinetics_pattern,
    csv_rows,
    dedupe,
    detect_format,
    parse_headerless,
    parse_kinetics,
    parse_mmaction,
    parse_table,
    read_text,
    space_rows,
)
from extract.errors import (
    ClassListError,
    DuplicateVideoError,
    EmptyListError,
    InputError,
    LabelIdOutOfRangeError,
    MissingVideoError,
    SourceNotFoundError,
    UnknownLabelError,
)

logger = logging.getLogger(__name__)

UNSPLIT = "unsplit"
CLASS_FILE_NAMES = ("classes.txt", "moments_categories.txt")
#: Columns of ``VideoList.videos`` (and of the store's videos table) holding the window of
#: an untrimmed file that clips come from, in seconds; present only when a row has one.
TRIM_COLUMNS = ("trim_start", "trim_end")
_SPLIT_WORD = re.compile(r"(?<![a-z])(train|val|test)")
_SHOWN = 5  # missing files / known classes named in an error message


@dataclass(frozen=True)
class VideoList:
    """Videos to process and their labels.

    Attributes:
        videos: one row per video, columns ``id`` (unique str), ``path`` (absolute str),
            ``split`` (str) and ``labels`` (list of class names, empty if unlabelled).
        classes: class names; index = label id.
        source: the CSV or folder read.
        root: the folder paths were resolved against.
        format: ``"multi_mit"``, ``"mit"`` (MiT v1) or ``"table"`` (all three ``--format
            mit``), ``"kinetics"``, ``"mmaction"`` or ``"folder"``.
    """

    videos: pd.DataFrame
    classes: list[str]
    source: Path
    root: Path
    format: str

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def labelled(self) -> bool:
        """True if at least one video has a label."""
        return any(len(labels) for labels in self.videos["labels"])

    def label_matrix(self) -> np.ndarray:
        """Multi-hot labels, ``(n_videos, n_classes)`` uint8."""
        index = {name: i for i, name in enumerate(self.classes)}
        out = np.zeros((len(self.videos), len(self.classes)), np.uint8)
        for row, labels in enumerate(self.videos["labels"]):
            out[row, [index[name] for name in labels]] = 1
        return out


def read_class_list(path: str | Path) -> list[str]:
    """Class names from a file: one per line, or ``name,index`` lines ordered by index."""
    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError("class list not found; pass an existing file", path)
    entries = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            entries.append((line_no, line.strip()))
    if not entries:
        raise ClassListError("class list is empty; write one class name per line", path)
    indexed = all("," in text and INT_TOKEN.match(text.rsplit(",", 1)[1].strip())
                  for _, text in entries)
    if indexed:  # moments_categories.txt: name,index
        by_index = {}
        for line_no, text in entries:
            name, index = (s.strip() for s in text.rsplit(",", 1))
            if int(index) in by_index:
                raise ClassListError(f"index {index} used twice", path, line_no)
            by_index[int(index)] = name
        if sorted(by_index) != list(range(len(by_index))):
            raise ClassListError(f"indices must be 0..{len(by_index) - 1} with no gaps, got "
                                 f"{min(by_index)}..{max(by_index)}", path)
        names = [by_index[i] for i in range(len(by_index))]
    else:
        names = [text for _, text in entries]
    seen: dict[str, int] = {}
    for (line_no, _), name in zip(entries, names):
        if name in seen:
            raise ClassListError(f"class {name!r} listed twice (also line {seen[name]})",
                                 path, line_no)
        seen[name] = line_no
    return names


def _resolve_classes(rows: list[Row], classes: Sequence[str] | str | Path | None,
                     source: Path) -> list[str]:
    if isinstance(classes, (str, Path)):
        return read_class_list(classes)
    if classes is not None:
        names = [str(c) for c in classes]
        if len(set(names)) != len(names) or not all(names):
            raise ClassListError("the class list has empty or repeated names")
        return names
    if source.is_file():
        for name in CLASS_FILE_NAMES:
            if (source.parent / name).is_file():
                logger.info("using the class list %s", source.parent / name)
                return read_class_list(source.parent / name)
    for row in rows:
        ids = [x for x in row.labels if INT_TOKEN.match(x)]
        if ids:
            raise LabelIdOutOfRangeError(
                f"label id {ids[0]} but no class list; pass the class list (e.g. "
                "moments_categories.txt) to map ids to names", source, row.line)
    return sorted({x for row in rows for x in row.labels})


def _label_names(rows: list[Row], classes: list[str], source: Path) -> list[list[str]]:
    index = set(classes)
    out = []
    for row in rows:
        names = []
        for token in row.labels:
            if token in index:
                names.append(token)
            elif INT_TOKEN.match(token):
                if not 0 <= int(token) < len(classes):
                    raise LabelIdOutOfRangeError(
                        f"label id {token} outside 0..{len(classes) - 1} ({len(classes)} "
                        "classes); check the class list matches this file", source, row.line)
                names.append(classes[int(token)])
            else:
                shown = ", ".join(classes[:_SHOWN]) + (", ..." if len(classes) > _SHOWN else "")
                raise UnknownLabelError(
                    f"unknown label {token!r} (classes: {shown}); fix the row or pass the "
                    "class list that contains it", source, row.line)
        out.append(dedupe(names))
    return out


def _guess_split(source: Path) -> str:
    match = _SPLIT_WORD.search(source.stem.lower())
    return match.group(1) if match else UNSPLIT


def _scan_folder(folder: Path) -> list[Row]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return [Row(0, path, []) for path in sorted(found)]


def _video_table(rows: list[Row], labels: list[list[str]], root: Path, source: Path,
                 default_split: str, check_files: bool) -> pd.DataFrame:
    abs_paths, ids = [], []
    seen_path: dict[str, int] = {}
    seen_id: dict[str, int] = {}
    for row in rows:
        path = os.path.abspath(root / row.path)
        inside = os.path.commonpath([path, str(root)]) == str(root)
        key = PurePosixPath(Path(os.path.relpath(path, root) if inside else row.path).as_posix())
        vid = row.id or (str(key.with_suffix("")) if key.suffix else str(key))
        for table, value, what in ((seen_path, path, "path"), (seen_id, vid, "id")):
            if value in table:
                raise DuplicateVideoError(
                    f"video {what} {value!r} already listed on line {table[value]}; list each "
                    "video once", source, row.line or None)
            table[value] = row.line
        abs_paths.append(path)
        ids.append(vid)
    if check_files:
        missing = [(row, p) for row, p in zip(rows, abs_paths) if not os.path.isfile(p)]
        if missing:
            shown = "; ".join(f"line {row.line}: {p}" for row, p in missing[:_SHOWN])
            raise MissingVideoError(
                f"{len(missing)} of {len(rows)} listed videos not found ({shown}"
                f"{'; ...' if len(missing) > _SHOWN else ''}); check the root folder "
                f"({root})", source, missing[0][0].line)
    splits = [SPLIT_ALIASES.get(r.split.lower(), r.split) if r.split else default_split
              for r in rows]
    table = pd.DataFrame({"id": ids, "path": abs_paths, "split": splits, "labels": labels})
    if any(r.start is not None for r in rows):
        table[TRIM_COLUMNS[0]] = [math.nan if r.start is None else r.start for r in rows]
        table[TRIM_COLUMNS[1]] = [math.nan if r.end is None else r.end for r in rows]
    return table


def _read_rows(source: Path, fmt: str, root: Path,
               kinetics_pattern: str | None) -> tuple[str, list[Row]]:
    """(fine format name, rows) of a list file in ``fmt`` (``auto``: detected)."""
    text = read_text(source)
    raw = csv_rows(text)
    if not raw:
        raise EmptyListError("lists no videos; expected rows like `path,label[,label...]`", source)
    if fmt == "auto":
        fmt = detect_format(raw)
        logger.info("%s: detected the %s list format (pass --format to insist on one)", source, fmt)
    else:
        check_format(fmt, raw, source)
    header = [x.lower() for x in raw[0][1]]
    if fmt == "kinetics":
        rows, fine = parse_kinetics(header, raw[1:], source, root, kinetics_pattern), "kinetics"
    elif fmt == "mmaction":
        rows, fine = parse_mmaction(space_rows(text), source, root), "mmaction"
    elif header[0] in PATH_HEADERS:
        rows, fine = parse_table(header, raw[1:], source), "table"
    else:
        fine, rows = parse_headerless(raw, source)
    if not rows:
        raise EmptyListError("has a header but lists no videos", source)
    return fine, rows


def add_list_arguments(group: argparse._ActionsContainer) -> None:
    """The ``--format`` and ``--kinetics-pattern`` flags of every command that reads a list."""
    group.add_argument(
        "--format",
        dest="list_format",
        choices=FORMATS,
        default="auto",
        help="format of --videos: mit (path,label[,label...], optionally a path,... header), kinetics "
        "(label,youtube_id,time_start,time_end,split), mmaction (path label_id [label_id ...] separated by "
        "spaces; rawframes lists are refused), folder, or auto (default: detected from the first row, "
        "logged with -v)",
    )
    group.add_argument(
        "--kinetics-pattern",
        metavar="PATTERN",
        help="where a Kinetics row's file is, relative to --root: a format string over {youtube_id}, "
        "{time_start}, {time_end} (integer seconds), {split}, {label}, {label_dir} (label with _ for "
        "spaces), e.g. '{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4'. With a time "
        "field the file is the trimmed segment; without one (e.g. 'videos/{youtube_id}.mp4') it is the "
        "untrimmed video and clips come only from [time_start, time_end). Default: the trimmed "
        "<youtube_id>_<start:06d>_<end:06d>.mp4 in the crawler's <split>/<label>/ or the flat <split>/ layout",
    )


def read_video_list(
    source: str | Path,
    root: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    *,
    split: str | None = None,
    check_files: bool = True,
    list_format: str = "auto",
    kinetics_pattern: str | None = None,
) -> VideoList:
    """Read a video list from a list file (MiT, Kinetics, mmaction2) or a folder.

    Args:
        source: a CSV/TXT list file, or a folder of videos.
        root: folder that relative paths are relative to (default: the list's folder, or
            the source folder).
        classes: class names in id order, or a class file; see the module docstring for
            the default.
        split: split of rows that name none (default: guessed from the file name).
        check_files: raise :class:`MissingVideoError` if a listed file does not exist.
        list_format: one of :data:`FORMATS`; ``auto`` detects it (and logs what it found).
        kinetics_pattern: where a Kinetics row's file is, e.g.
            ``{split}/{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4`` (fields in
            the module docstring); default: the search in the module docstring.

    Returns:
        The videos, with absolute paths and class-name labels, and the class list.

    Raises:
        InputError: one of its subclasses, with the file and line of the problem.
    """
    if list_format not in FORMATS:
        raise InputError(f"unknown list format {list_format!r}; use one of {', '.join(FORMATS)}")
    if kinetics_pattern is not None:
        check_kinetics_pattern(kinetics_pattern)
    source = Path(source)
    if not source.exists():
        raise SourceNotFoundError("no such file or folder; pass a video list or a video folder",
                                  source)
    if list_format != "auto" and source.is_dir() != (list_format == "folder"):
        what = "a folder; --format folder reads it (or auto)" if source.is_dir() else (
            f"a file; --format folder needs a folder of videos (for this list: --format auto, "
            f"{', '.join(FORMATS[1:-1])})")
        raise InputError(f"is {what}", source)
    root = Path(os.path.abspath(root if root is not None else
                                (source if source.is_dir() else source.parent)))
    if source.is_dir():
        rows, fmt = _scan_folder(Path(os.path.abspath(source))), "folder"
        if not rows:
            raise EmptyListError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in this "
                                 "folder or below", source)
    else:
        fmt, rows = _read_rows(source, list_format, root, kinetics_pattern)
    class_names = _resolve_classes(rows, classes, source)
    labels = _label_names(rows, class_names, source)
    if split:
        default_split = SPLIT_ALIASES.get(split.lower(), split)
    else:
        default_split = UNSPLIT if source.is_dir() else _guess_split(source)
    table = _video_table(rows, labels, root, source, default_split, check_files)
    logger.info("%s: %d videos (%s format), %d classes", source, len(table), fmt,
                len(class_names))
    return VideoList(table, class_names, source, root, fmt)
