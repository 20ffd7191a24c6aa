"""The project's error root and the store's typed errors.

:class:`VideoFeatError` is the root of every error any package raises for a mistake a user
can make (a wrong flag, a missing file, a bad CSV row, a damaged store): ``store``'s
:class:`StoreError` family below, ``heads``' ``TrainError`` / ``GridError`` / ``KnnError``,
``extract``'s ``ExtractError`` family, ``fusion``'s ``FusionError`` family, the benchmarks'
``RecipeError`` / ``PipelineError``. Its message says what to do next. Every command runs
under :func:`store.cli.run_command`, which turns it into one ``error: ...`` line on stderr and
exit status 2.
"""

from __future__ import annotations


class VideoFeatError(Exception):
    """Root of every error the project raises for a user's mistake; its message is one line."""


class SettingsError(VideoFeatError, ValueError):
    """A settings value (a flag, a config-file entry, a settings field) is unknown or out of range.

    Also a ``ValueError``: code that validated settings with ``except ValueError`` still works.
    """


class StoreError(VideoFeatError):
    """Base class of every error the store raises for a user's mistake or a damaged store."""


class StoreNotFound(StoreError):
    """The path holds no feature store."""


class StoreExists(StoreError):
    """A store already exists where a new one was to be created."""


class ReadOnlyStore(StoreError):
    """A write was attempted on a store opened with ``mode="r"``."""


class SchemaMismatch(StoreError):
    """The store's layout or a given table/array does not match the schema."""


class ClassMismatch(SchemaMismatch):
    """A class list or label id does not match the store's classes."""


class DuplicateVideoId(StoreError):
    """A video id is already in the store, or repeated in the appended table."""


class VideoNotFound(StoreError):
    """No video with the given id is in the store."""


class FeatureSetNotFound(StoreError):
    """No feature set of the given name exists."""


class FeatureSetExists(StoreError):
    """A feature set of that name exists with a different specification."""


class PredictionRunNotFound(StoreError):
    """No prediction run of the given name exists."""


class ShapeMismatch(StoreError):
    """An array given to the store has the wrong shape, dtype or row count."""


class StoreLocked(StoreError):
    """Another live writer holds the lock on the feature set (or on overlapping rows)."""


class InvalidIndexSpec(StoreError):
    """An index setting is out of range, or cannot be met for this feature set."""


class IndexNotFound(StoreError):
    """The feature set has no saved index."""


class StaleIndex(StoreError):
    """The saved index no longer matches its feature set (rebuild it with --rebuild)."""
