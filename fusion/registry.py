"""The fusion methods: a base class, a dict and a decorator.

A method is a :class:`Fuser` subclass registered under a name with ``@register_fusion``;
``get_fusion(name, settings)`` builds one. Adding a method = one file + one class; the
parametrized tests pick it up.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from fusion.errors import FusionError, UnknownMethod
from fusion.inputs import StackInputs

_METHODS: dict[str, type[Fuser]] = {}


class Fuser(abc.ABC):
    """A late-fusion method over M input runs of C classes.

    Subclasses set ``Settings`` (a frozen dataclass with ``to_dict`` / ``from_dict``) and
    implement :meth:`fit`, :meth:`predict` and :meth:`contributions`.
    """

    name: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = True
    accepts_client: ClassVar[bool] = False  # takes a Dask ``client=`` at construction
    Settings: ClassVar[type]

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.Settings()
        if not isinstance(self.settings, self.Settings):
            raise TypeError(f"{type(self).__name__} takes {self.Settings.__name__}, got {type(self.settings).__name__}")

    @abc.abstractmethod
    def fit(self, x: StackInputs, labels: np.ndarray) -> Fuser:
        """Fit on the stack of the fit rows and their ``(n, C)`` labels; returns self."""

    @abc.abstractmethod
    def predict(self, x: StackInputs) -> np.ndarray:
        """``(n, C)`` float32 fused probabilities."""

    @abc.abstractmethod
    def contributions(self, x: StackInputs) -> np.ndarray:
        """``(n, M, C)`` contribution of each input run to each class's output on each row,
        in the method's own output units (probability for averages, log-odds for stackers)."""

    def reliance(self, x: StackInputs) -> np.ndarray:
        """``(C, M)`` how much each class's output moves with each input: the mean absolute
        deviation of the input's contribution over the rows of ``x`` (a constant contribution
        does not change any ranking), normalised to sum to 1 per class."""
        contrib = self.contributions(x).astype(np.float64)
        spread = np.abs(contrib - contrib.mean(axis=0, keepdims=True)).mean(axis=0)  # (n, M, C) -> (M, C)
        total = spread.sum(axis=0, keepdims=True)
        return np.divide(spread, total, out=np.zeros_like(spread), where=total > 0).T  # (M, C) -> (C, M)

    def record(self) -> dict[str, Any]:
        """JSON-able description of the fitted method (settings and what it learned)."""
        return {"method": self.name, "settings": self.settings.to_dict()}


def register_fusion(name: str) -> Callable[[type[Fuser]], type[Fuser]]:
    """Class decorator: register a :class:`Fuser` under ``name`` (twice is an error)."""
    def deco(cls: type[Fuser]) -> type[Fuser]:
        if name in _METHODS:
            raise ValueError(f"fusion method {name!r} is registered twice")
        cls.name = name
        _METHODS[name] = cls
        return cls
    return deco


def list_fusions() -> list[str]:
    """Names of the registered methods, in registration order."""
    return list(_METHODS)


def fusion_class(name: str) -> type[Fuser]:
    if name not in _METHODS:
        raise UnknownMethod(f"unknown fusion method {name!r}; choose one of {', '.join(list_fusions())}")
    return _METHODS[name]


def get_fusion(name: str, settings: Any = None, **kwargs: Any) -> Fuser:
    """Build method ``name``.

    Args:
        name: A registered name (:func:`list_fusions`).
        settings: Its settings object, or a dict for ``Settings.from_dict``; None = defaults.
        **kwargs: Run-time arguments of the method (e.g. ``client=`` for xgboost on Dask).
    """
    cls = fusion_class(name)
    if settings is None or isinstance(settings, dict):
        try:
            settings = cls.Settings.from_dict(settings)
        except FusionError as err:
            raise FusionError(f"fusion method {name!r} ([{name}] table of --config): {err}") from None
    return cls(settings, **kwargs)
