"""What every ``python -m ...`` command of the project shares: the error exit and argument types.

A command's ``main`` is wrapped by :func:`run_command`: any :class:`~store.errors.VideoFeatError`
(the project's one error root) raised inside it ends as one ``error: ...`` line on stderr and
exit status 2, with no traceback; Ctrl-C prints how to continue and exits 130::

    @run_command(interrupted="rerun the same command to resume")
    def main(argv: list[str] | None = None) -> int:
        ...

Counts a user types (``--clips``, ``--batch-size``, ``--k``, ``--folds`` ...) are checked by the
argument parser itself, so a zero or negative value is refused with the flag's name before any
work starts::

    p.add_argument("--clips", type=positive_int, default=8)
    p.add_argument("--workers", type=non_negative_int)

Settings dataclasses that serve both a command and a file (or the Python API) name a bad
value the way the user wrote it, with :func:`setting_name`: ``--batch-size / batch_size must be
a whole number >= 1, got 0``.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import ParamSpec

from store.errors import VideoFeatError

P = ParamSpec("P")
USER_ERROR = 2  # exit status of a command stopped by a user's mistake
INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT)


def report_error(exc: BaseException) -> int:
    """Print ``exc`` as one ``error: ...`` line on stderr; returns the exit status 2."""
    print("error: " + " ".join(str(exc).split()), file=sys.stderr)
    return USER_ERROR


def run_command(main: Callable[P, int] | None = None, *, interrupted: str | None = None,
                path_errors: bool = False) -> Callable[P, int] | Callable[[Callable[P, int]], Callable[P, int]]:
    """Decorate a command's ``main``: the project's errors become one line and exit status 2.

    Args:
        main: the command's entry point (returns its exit status).
        interrupted: what to tell the user after Ctrl-C (``interrupted: ...``, exit 130); None
            lets ``KeyboardInterrupt`` through.
        path_errors: an ``OSError`` is a user error too (commands whose work is reading and
            writing the files the user names: an unreadable input, an unwritable output).

    Usable bare (``@run_command``) or with arguments (``@run_command(interrupted="...")``).
    """
    def wrap(fn: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(fn)
        def command(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return fn(*args, **kwargs)
            except VideoFeatError as exc:
                return report_error(exc)
            except OSError as exc:
                if not path_errors:
                    raise
                return report_error(exc)
            except KeyboardInterrupt:
                if interrupted is None:
                    raise
                print(f"interrupted: {interrupted}", file=sys.stderr)
                return INTERRUPTED
        return command

    return wrap if main is None else wrap(main)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    """An ``argparse`` type: a whole number >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An ``argparse`` type: a whole number >= 0 (0 usually means "off" or "in-process")."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text: str) -> float:
    """An ``argparse`` type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def setting_name(field: str, flag: str | None = None) -> str:
    """A setting in the user's terms, for error messages of settings that serve both a command
    and a file (or the Python API): its flag and its key, ``"--batch-size / batch_size"``.

    Args:
        field: the dataclass field, which is also the key in config files.
        flag: the command's flag when it is not ``--`` + the field with dashes; ``""`` for a
            setting without a flag (then only the key is named).
    """
    flag = "--" + field.replace("_", "-") if flag is None else flag
    return f"{flag} / {field}" if flag else field
