"""The row parsers behind :func:`extract.inputs.read_video_list`, one per list format, and the
detection of ``--format auto``. The formats themselves are documented in ``extract.inputs``.
"""

from __future__ import annotations

import csv
import io
import math
import re
import string
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from extract.errors import InputError, MalformedRowError

#: ``--format`` values: ``auto`` detects one of the others.
FORMATS = ("auto", "mit", "kinetics", "mmaction", "folder")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg",
                    ".flv", ".wmv", ".3gp")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validate": "val", "validation": "val", "test": "test", "testing": "test"}
LABEL_SEPARATOR = ";"
#: First-column names that mark a header line of a table (``path,labels,split``).
PATH_HEADERS = ("path", "video", "video_path", "file", "filename")
LABEL_HEADERS = ("label", "labels")
KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")
#: Fields a ``--kinetics-pattern`` may use.
KINETICS_FIELDS = ("youtube_id", "time_start", "time_end", "split", "label", "label_dir")
INT_TOKEN = re.compile(r"^[+-]?\d+$")


@dataclass
class Row:
    """One listed video as parsed: its line, path as written, label tokens, split, id and,
    for an untrimmed file, the window ``[start, end)`` in seconds its clips come from."""

    line: int
    path: str
    labels: list[str]
    split: str | None = None
    id: str | None = None
    start: float | None = None
    end: float | None = None


def read_text(path: Path) -> str:
    """The file as text: UTF-8, a byte order mark skipped; fails with its first bad line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise MalformedRowError("is not UTF-8 text (byte 0x%02x); save the file as UTF-8"
                                % data[err.start], path, line) from None


def csv_rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, stripped fields) of the non-blank, non-comment rows.

    Line ends may be ``\n``, ``\r\n`` or ``\r``.
    """
    rows = []
    reader = csv.reader(io.StringIO(text, newline=""))
    for fields in reader:
        fields = [x.strip() for x in fields]
        if not any(fields) or fields[0].startswith("#"):
            continue
        rows.append((reader.line_num, fields))
    return rows


def space_rows(text: str) -> list[tuple[int, list[str]]]:
    """(line number, whitespace-separated tokens) of the non-blank, non-comment lines."""
    rows = []
    for line_no, line in enumerate(io.StringIO(text, newline=None), 1):  # \r\n and \r read as \n
        tokens = line.split()
        if tokens and not tokens[0].startswith("#"):
            rows.append((line_no, tokens))
    return rows


def dedupe(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(x for x in labels if x))


def _trim(fields: list[str]) -> list[str]:
    """A row without its trailing empty fields (``a.mp4,x,,`` -> ``a.mp4,x``)."""
    while fields and not fields[-1]:
        fields = fields[:-1]
    return fields


def _looks_mmaction(fields: list[str]) -> bool:
    """One CSV field holding ``path id [id ...]`` (or ``dir n_frames id``) separated by spaces."""
    tokens = fields[0].split() if len(_trim(fields)) == 1 else []
    return len(tokens) >= 2 and all(INT_TOKEN.match(t) for t in tokens[1:])


def detect_format(rows: list[tuple[int, list[str]]]) -> str:
    """``kinetics``, ``mmaction`` or ``mit`` for a list's CSV rows (the first row decides)."""
    first = [x.lower() for x in rows[0][1]]
    if "youtube_id" in first:
        return "kinetics"
    return "mmaction" if _looks_mmaction(rows[0][1]) else "mit"


def check_format(fmt: str, rows: list[tuple[int, list[str]]], source: Path) -> None:
    """Refuse a list that is not in the explicit ``--format``, naming the first telling line."""
    detected = detect_format(rows)
    if fmt == detected or (fmt == "mmaction" and detected == "mit" and "," not in _raw(rows[0][1])):
        return
    line, fields = rows[0]
    expected = {"mit": "`path,label[,label...]` (comma-separated, optionally a `path,...` header)",
                "kinetics": "a header `label,youtube_id,time_start,time_end,split`",
                "mmaction": "`path label [label ...]` separated by spaces"}[fmt]
    raise MalformedRowError(f"not in the {fmt} format: expected {expected}, got {_raw(fields)[:60]!r} "
                            f"(it looks like the {detected} format: pass --format {detected} or auto)",
                            source, line)


def _raw(fields: list[str]) -> str:
    return ",".join(_trim(fields))


def parse_headerless(rows: list[tuple[int, list[str]]], source: Path) -> tuple[str, list[Row]]:
    """Multi-MiT ``path,label[,label...]`` rows, or MiT v1 ``path,label,n_agree,n_disagree``."""
    rows = [(line, _trim(fields) or [""]) for line, fields in rows]
    mit = all(len(f) == 4 and not INT_TOKEN.match(f[1]) and INT_TOKEN.match(f[2]) and INT_TOKEN.match(f[3])
              for _, f in rows)
    out = []
    for line, fields in rows:
        if not fields[0]:
            raise MalformedRowError("empty path in the first column; write `path,label,...`",
                                    source, line)
        if len(fields) == 1 and _looks_mmaction(fields):
            raise MalformedRowError(f"{fields[0]!r} has its labels separated by spaces (an mmaction "
                                    "list?); separate them with commas or pass --format mmaction",
                                    source, line)
        out.append(Row(line, fields[0], [fields[1]] if mit else dedupe(fields[1:])))
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


def parse_table(header: list[str], rows: list[tuple[int, list[str]]], source: Path) -> list[Row]:
    """A table with a header whose first column is the path (``path,labels,split[,id]``)."""
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
        out.append(Row(line, f[col["path"]], dedupe([x.strip() for x in labels]),
                       f[col["split"]] if "split" in col and f[col["split"]] else None,
                       f[col["id"]] if "id" in col and f[col["id"]] else None))
    return out


def check_kinetics_pattern(pattern: str) -> bool:
    """Validate a ``--kinetics-pattern``; True if it names trimmed files (uses a time field)."""
    try:
        names = {name.split(".")[0].split("[")[0]
                 for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as err:
        raise InputError(f"--kinetics-pattern {pattern!r}: {err}") from None
    unknown = sorted(names - set(KINETICS_FIELDS))
    if unknown or "" in names:
        raise InputError(f"--kinetics-pattern {pattern!r}: unknown field {{{(unknown or [''])[0]}}}; "
                         f"use {', '.join('{' + f + '}' for f in KINETICS_FIELDS)}")
    if "youtube_id" not in names:
        raise InputError(f"--kinetics-pattern {pattern!r} lacks {{youtube_id}}: every row would name one file")
    return bool(names & {"time_start", "time_end"})


def _kinetics_candidates(fields: dict, split: str, label: str) -> list[str]:
    """The default search: the trimmed file in the crawler and CVDF layouts, first that exists wins."""
    name = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4".format(**fields)
    split_dirs = dedupe([split, SPLIT_ALIASES.get(split.lower(), "")])
    label_dirs = dedupe([label, label.replace(" ", "_")])
    folders = [(s, lab) for s in split_dirs for lab in label_dirs] + [(s,) for s in split_dirs]
    folders += [(lab,) for lab in label_dirs] + [()]
    return dedupe([PurePosixPath(*[x for x in parts if x], name).as_posix() for parts in folders])


def parse_kinetics(header: list[str], rows: list[tuple[int, list[str]]], source: Path,
                   root: Path, pattern: str | None = None) -> list[Row]:
    """Kinetics rows, resolved to files by ``pattern`` or by the default search.

    A pattern without ``{time_start}``/``{time_end}`` names the untrimmed video: its rows get
    the window ``[time_start, time_end)`` (see ``extract.inputs``).
    """
    col = _header_index(header, rows, source)
    missing = [c for c in KINETICS_COLUMNS if c not in col]
    if missing:
        raise MalformedRowError(f"Kinetics header lacks {', '.join(missing)}; expected "
                                "label,youtube_id,time_start,time_end,split", source, 1)
    untrimmed = pattern is not None and not check_kinetics_pattern(pattern)
    out = []
    for line, f in rows:
        try:
            start, end = float(f[col["time_start"]]), float(f[col["time_end"]])
        except ValueError:
            raise MalformedRowError(
                f"time_start/time_end must be numbers, got {f[col['time_start']]!r}, "
                f"{f[col['time_end']]!r}", source, line) from None
        if untrimmed and not (0 <= start < end and math.isfinite(end)):
            raise MalformedRowError(f"the window [{start:g}, {end:g}) s is empty or negative; "
                                    "time_start must be >= 0 and below time_end", source, line)
        label = f[col["label"]] if "label" in col else ""
        split = f[col["split"]] if "split" in col and f[col["split"]] else None
        fields = {"youtube_id": f[col["youtube_id"]], "time_start": round(start), "time_end": round(end),
                  "split": split or "", "label": label, "label_dir": label.replace(" ", "_")}
        if pattern is None:
            candidates = _kinetics_candidates(fields, split or "", label)
            path = next((c for c in candidates if (root / c).exists()), candidates[0])
        else:
            try:
                path = pattern.format(**fields)
            except (ValueError, TypeError, LookupError, AttributeError) as err:
                raise InputError(f"--kinetics-pattern {pattern!r}: {type(err).__name__}: {err}", source, line) from None
        out.append(Row(line, path, [label] if label else [], split,
                       start=start if untrimmed else None, end=end if untrimmed else None))
    return out


def parse_mmaction(rows: list[tuple[int, list[str]]], source: Path, root: Path) -> list[Row]:
    """mmaction2 video-list rows ``path label [label ...]`` (whitespace-separated label ids).

    A row whose path has no video extension, or names a folder, is the rawframes form
    ``frame_dir total_frames label [label ...]``: refused, the decoder reads video files.
    """
    out = []
    for line, tokens in rows:
        path = tokens[0]
        if "," in path:
            raise MalformedRowError(f"{path[:60]!r} has commas; an mmaction list is `path label [label ...]` "
                                    "separated by spaces (for a comma-separated list pass --format mit)",
                                    source, line)
        if not path.lower().endswith(VIDEO_EXTENSIONS) or (root / path).is_dir():
            raise MalformedRowError(
                f"{path!r} is a folder of frames (an mmaction rawframes list `frame_dir total_frames "
                "label`); extract decodes video files only: list the videos as `path label`", source, line)
        bad = next((t for t in tokens[1:] if not INT_TOKEN.match(t)), None)
        if bad is not None:
            raise MalformedRowError(f"label {bad!r} is not an integer id; an mmaction list is "
                                    "`path label_id [label_id ...]` into the class list", source, line)
        out.append(Row(line, path, dedupe(tokens[1:])))
    return out
