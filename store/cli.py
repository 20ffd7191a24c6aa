"""Argument types shared by every ``python -m ...`` command of the project.

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
