"""Typed errors of the fusion package.

Each names what went wrong and what to do next; ``python -m fusion.run`` prints the message
on one line and exits with status 2. They derive from the project's error root
:class:`store.errors.VideoFeatError` (not from ``StoreError``: a fusion mistake is not a damaged
or misused store).
"""

from __future__ import annotations

from store.errors import VideoFeatError


class FusionError(VideoFeatError):
    """Base class of every error fusion raises for a user's mistake."""


class LeakageError(FusionError):
    """The requested fit/eval rows would let the stacker see predictions made in-sample, or
    evaluate it on rows it was fitted on."""


class InputMismatch(FusionError):
    """The input prediction runs do not fit the store or each other (rows, classes, score type)."""


class UnknownMethod(FusionError):
    """No fusion method of that name is registered."""
