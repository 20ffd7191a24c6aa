"""Typed errors of the ``extract`` package for mistakes a user can make.

Every error carries a one-line message that names the file (and the line, where there is
one) and says what to do next. ``ExtractError`` derives from the project's root
:class:`store.errors.VideoFeatError`, which every command turns into one ``error: ...`` line and
exit status 2 (:func:`store.cli.run_command`).

Hierarchy::

    VideoFeatError (store.errors)
    +-- ExtractError
    +-- InputError (also a ValueError): a video list or class list cannot be used
    |   +-- SourceNotFoundError     the CSV / folder / class file does not exist
    |   +-- EmptyListError          no videos listed (empty CSV, folder without videos)
    |   +-- MalformedRowError       a row cannot be parsed (wrong field count, bad number)
    |   +-- UnknownLabelError       a label name not in the class list
    |   +-- LabelIdOutOfRangeError  an integer label id outside 0..C-1 (or no class list)
    |   +-- ClassListError          the class list itself is invalid
    |   +-- MissingVideoError       listed video files do not exist
    |   +-- DuplicateVideoError     a path (or id) listed twice
    +-- DemoError: the demo directory cannot be used
        +-- DemoConfigMismatch      the directory holds a demo made with other settings
"""

from __future__ import annotations

from pathlib import Path

from store.errors import VideoFeatError


class ExtractError(VideoFeatError):
    """Base class of every error ``extract`` raises for a user's mistake."""


class InputError(ExtractError, ValueError):
    """A video list or class list cannot be used.

    Attributes:
        path: the offending file, if any.
        line: 1-based line number in ``path``, if the problem is on one line.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = Path(path) if path is not None else None
        self.line = line
        prefix = ""
        if self.path is not None:
            prefix = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(prefix + message)


class SourceNotFoundError(InputError):
    """The video list, folder or class file does not exist."""


class EmptyListError(InputError):
    """The source lists no videos."""


class MalformedRowError(InputError):
    """A row of a CSV cannot be parsed."""


class UnknownLabelError(InputError):
    """A label name is not in the class list."""


class LabelIdOutOfRangeError(InputError):
    """An integer label id is outside ``0 .. C-1``, or ids are used without a class list."""


class ClassListError(InputError):
    """The class list is invalid (empty, repeated names, bad index column)."""


class MissingVideoError(InputError):
    """Listed video files do not exist."""


class DuplicateVideoError(InputError):
    """A video path or id is listed twice."""


class DemoError(ExtractError):
    """The demo dataset directory cannot be used."""


class DemoConfigMismatch(DemoError):
    """The directory holds a demo generated with a different configuration."""
