"""Read the list of videos to process: label CSVs in the common formats, or a plain folder.

:func:`read_video_list` accepts, and tells apart by their first row:

* **Multi-MiT style** (no header): ``path,label[,label...]``. Labels are class names or
  integer ids (0-based, into the class list). The Multi-MiT release's ``trainingSet.txt`` /
  ``validationSet.txt`` use ids into ``moments_categories.txt``; the demo writes names.
* **Moments-in-Time v1** (no header): ``path,label,n_agree,n_disagree``
  (``trainingSet.csv``): recognised when *every* row has exactly these four fields, a
  non-integer label and two integer vote counts; the counts are ignored.
* **Kinetics** (header with ``youtube_id,time_start,time_end``, optionally ``label``,
  ``split``, ``is_cc``): the file is ``<youtube_id>_<start:06d>_<end:06d>.mp4`` (the
  ActivityNet crawler's name), looked for under ``root`` in this order:
  ``<split>/<label>/``, ``<split>/<label with _ for spaces>/`` (crawler layout), ``<split>/``
  (CVDF flat layout), ``<label>/``, ``<label with _>/``, ``./``; the first that exists wins
  (the first one is reported when none does). ``<split>`` is tried as written and as its
  normal name (``validate``/``validation`` -> ``val``), which is also the row's split.
* **Table** (header whose first column is ``path``, ``video``, ``video_path``, ``file`` or
  ``filename``): the path column and optionally ``labels`` (or ``label``; several joined by
  ``;``, or, when it is the last column, also in further fields as in Multi-MiT rows),
  ``split`` and ``id`` (the video's id, instead of the one derived from the path); other
  columns are ignored. The demo's ``videos.csv`` is one.
* **a folder**: every video file under it, recursively (hidden files and folders skipped),
  sorted, unlabelled.

Blank rows and rows starting with ``#`` are skipped; fields are stripped of spaces and
trailing empty fields (``a.mp4,x,``) dropped; ``\r\n`` and ``\r`` line ends and a UTF-8 byte
order mark read like a clean file. A file that is not UTF-8 fails with its first bad line.
Paths are relative to ``root``
(default: the CSV's folder, or the folder itself); absolute paths are kept. A video's
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

import csv
import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from extract.errors import (
    ClassListError,
    DuplicateVideoError,
    EmptyListError,
    LabelIdOutOfRangeError,
    MalformedRowError,
    MissingVideoError,
    SourceNotFoundError,
    UnknownLabelError,
)

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg",
                    ".flv", ".wmv", ".3gp")
UNSPLIT = "unsplit"
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validate": "val", "validation": "val", "test": "test", "testing": "test"}
LABEL_SEPARATOR = ";"
#: First-column names that mark a header line of a table (``path,labels,split``).
PATH_HEADERS = ("path", "video", "video_path", "file", "filename")
LABEL_HEADERS = ("label", "labels")
CLASS_FILE_NAMES = ("classes.txt", "moments_categories.txt")
_INT = re.compile(r"^[+-]?\d+$")
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
        format: ``"multi_mit"``, ``"mit"``, ``"kinetics"``, ``"table"`` or ``"folder"``.
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


@dataclass
class _Row:
    line: int
    path: str
    labels: list[str]
    split: str | None = None
    id: str | None = None


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
    indexed = all("," in text and _INT.match(text.rsplit(",", 1)[1].strip())
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


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of the non-blank, non-comment rows.

    Fields are stripped of spaces. Line ends may be ``\n``, ``\r\n`` or ``\r``; a UTF-8 byte order mark is skipped.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise MalformedRowError("is not UTF-8 text (byte 0x%02x); save the file as UTF-8"
                                % data[err.start], path, line) from None
    rows = []
    reader = csv.reader(io.StringIO(text, newline=""))
    for fields in reader:
        fields = [x.strip() for x in fields]
        if not any(fields) or fields[0].startswith("#"):
            continue
        rows.append((reader.line_num, fields))
    return rows


def _dedupe(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(x for x in labels if x))


def _trim(fields: list[str]) -> list[str]:
    """A row without its trailing empty fields (``a.mp4,x,,`` -> ``a.mp4,x``)."""
    while fields and not fields[-1]:
        fields = fields[:-1]
    return fields


def _is_mit_v1(rows: list[tuple[int, list[str]]]) -> bool:
    return all(len(f) == 4 and not _INT.match(f[1]) and _INT.match(f[2]) and _INT.match(f[3])
               for _, f in rows)


def _parse_headerless(rows: list[tuple[int, list[str]]], source: Path) -> tuple[str, list[_Row]]:
    rows = [(line, _trim(fields) or [""]) for line, fields in rows]
    mit = _is_mit_v1(rows)
    out = []
    for line, fields in rows:
        if not fields[0]:
            raise MalformedRowError("empty path in the first column; write `path,label,...`",
                                    source, line)
        out.append(_Row(line, fields[0], [fields[1]] if mit else _dedupe(fields[1:])))
    return ("mit" if mit else "multi_mit"), out


def _header_index(header: list[str], rows: list[tuple[int, list[str]]],
                  source: Path) -> dict[str, int]:
    """Column indexes by name. A row may have more fields than the header when they are
    empty (trailing commas), or when the last column is ``label(s)``: more labels (a
    Multi-MiT list with a header line)."""
    more_labels = header[-1] in LABEL_HEADERS
    for line, fields in rows:
        extra = len(fields) > len(header) and not more_labels and any(fields[len(header):])
        if extra or len(fields) < len(header):
            raise MalformedRowError(f"expected {len(header)} fields ({','.join(header)}), got "
                                    f"{len(fields)}; quote fields that contain commas",
                                    source, line)
    return {name: i for i, name in enumerate(header)}


def _parse_table(header: list[str], rows: list[tuple[int, list[str]]],
                 source: Path) -> list[_Row]:
    header = ["path", *header[1:]]
    col = _header_index(header, rows, source)
    labels_col = col.get("labels", col.get("label"))
    last = labels_col is not None and labels_col == len(header) - 1
    out = []
    for line, f in rows:
        if not f[col["path"]]:
            raise MalformedRowError("empty path", source, line)
        cells = (f[labels_col:] if last else [f[labels_col]]) if labels_col is not None else []
        labels = [x for cell in cells for x in cell.split(LABEL_SEPARATOR)]
        out.append(_Row(line, f[col["path"]], _dedupe([x.strip() for x in labels]),
                        f[col["split"]] if "split" in col and f[col["split"]] else None,
                        f[col["id"]] if "id" in col and f[col["id"]] else None))
    return out


def _parse_kinetics(header: list[str], rows: list[tuple[int, list[str]]], source: Path,
                    root: Path) -> list[_Row]:
    col = _header_index(header, rows, source)
    missing = [c for c in ("youtube_id", "time_start", "time_end") if c not in col]
    if missing:
        raise MalformedRowError(f"Kinetics header lacks {missing}", source, 1)
    out = []
    for line, f in rows:
        try:
            start, end = float(f[col["time_start"]]), float(f[col["time_end"]])
        except ValueError:
            raise MalformedRowError(
                f"time_start/time_end must be numbers, got {f[col['time_start']]!r}, "
                f"{f[col['time_end']]!r}", source, line) from None
        label = f[col["label"]] if "label" in col else ""
        split = f[col["split"]] if "split" in col and f[col["split"]] else None
        name = f"{f[col['youtube_id']]}_{round(start):06d}_{round(end):06d}.mp4"
        split_dirs = _dedupe([split or "", SPLIT_ALIASES.get((split or "").lower(), "")])
        label_dirs = _dedupe([label, label.replace(" ", "_")])
        folders = [(s, lab) for s in split_dirs for lab in label_dirs] + [(s,) for s in split_dirs]
        folders += [(lab,) for lab in label_dirs] + [()]
        candidates = _dedupe([PurePosixPath(*[x for x in parts if x], name).as_posix()
                              for parts in folders])
        path = next((c for c in candidates if (root / c).exists()), candidates[0])
        out.append(_Row(line, path, [label] if label else [], split))
    return out


def _resolve_classes(rows: list[_Row], classes: Sequence[str] | str | Path | None,
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
        ids = [x for x in row.labels if _INT.match(x)]
        if ids:
            raise LabelIdOutOfRangeError(
                f"label id {ids[0]} but no class list; pass the class list (e.g. "
                "moments_categories.txt) to map ids to names", source, row.line)
    return sorted({x for row in rows for x in row.labels})


def _label_names(rows: list[_Row], classes: list[str], source: Path) -> list[list[str]]:
    index = set(classes)
    out = []
    for row in rows:
        names = []
        for token in row.labels:
            if token in index:
                names.append(token)
            elif _INT.match(token):
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
        out.append(_dedupe(names))
    return out


def _guess_split(source: Path) -> str:
    match = _SPLIT_WORD.search(source.stem.lower())
    return match.group(1) if match else UNSPLIT


def _scan_folder(folder: Path) -> list[_Row]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return [_Row(0, path, []) for path in sorted(found)]


def _video_table(rows: list[_Row], labels: list[list[str]], root: Path, source: Path,
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
    return pd.DataFrame({"id": ids, "path": abs_paths, "split": splits, "labels": labels})


def read_video_list(
    source: str | Path,
    root: str | Path | None = None,
    classes: Sequence[str] | str | Path | None = None,
    *,
    split: str | None = None,
    check_files: bool = True,
) -> VideoList:
    """Read a video list from a CSV (Multi-MiT, MiT, Kinetics or table style) or a folder.

    Args:
        source: a CSV/TXT label file, or a folder of videos.
        root: folder that relative paths are relative to (default: the CSV's folder, or
            the source folder).
        classes: class names in id order, or a class file; see the module docstring for
            the default.
        split: split of rows that name none (default: guessed from the file name).
        check_files: raise :class:`MissingVideoError` if a listed file does not exist.

    Returns:
        The videos, with absolute paths and class-name labels, and the class list.

    Raises:
        InputError: one of its subclasses, with the file and line of the problem.
    """
    source = Path(source)
    if not source.exists():
        raise SourceNotFoundError("no such file or folder; pass a label CSV or a video folder",
                                  source)
    root = Path(os.path.abspath(root if root is not None else
                                (source if source.is_dir() else source.parent)))
    if source.is_dir():
        rows, fmt = _scan_folder(Path(os.path.abspath(source))), "folder"
        if not rows:
            raise EmptyListError(f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in this "
                                 "folder or below", source)
    else:
        raw = _csv_rows(source)
        if not raw:
            raise EmptyListError("lists no videos; expected rows like `path,label[,label...]`",
                                 source)
        header = [x.lower() for x in raw[0][1]]
        if "youtube_id" in header:
            rows, fmt = _parse_kinetics(header, raw[1:], source, root), "kinetics"
        elif header[0] in PATH_HEADERS:
            rows, fmt = _parse_table(header, raw[1:], source), "table"
        else:
            fmt, rows = _parse_headerless(raw, source)
        if not rows:
            raise EmptyListError("has a header but lists no videos", source)
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
