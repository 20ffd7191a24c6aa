"""The head registry: a dict of builder functions and a decorator that fills it.

The built-in heads are the entries of the table in :mod:`heads.builders` (a pooling, its
keywords, a few defaults); adding one with an existing pooling is one entry there. Any other
builder is registered with ``@register_head("name")`` in a module listed in
``_BUILTIN_MODULES``; the parametrised tests in ``tests/heads/test_layers.py`` pick every
registered name up.

Example::

    from heads.registry import get_head, list_heads

    head = get_head("netvlad", in_dim=512, num_classes=313, num_clusters=32)
    logits = head(x, mask)          # (B, K, 512), (B, K) bool -> (B, 313)
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from typing import TypeVar

from torch import nn

logger = logging.getLogger(__name__)

HeadBuilder = Callable[..., nn.Module]
BuilderT = TypeVar("BuilderT", bound=HeadBuilder)

_HEADS: dict[str, HeadBuilder] = {}

# The modules whose builders make up the built-in heads; imported on first use of the registry
# so that ``get_head`` works whatever ``heads/__init__.py`` imports.
_BUILTIN_MODULES = ("heads.builders",)  # the table of the built-in heads


def register_head(name: str) -> Callable[[BuilderT], BuilderT]:
    """Register a head builder under ``name``.

    The builder takes keyword-only arguments, at least ``in_dim`` and ``num_classes``, and
    returns a module with ``forward(x, mask) -> (B, C)`` logits, ``forward_features(x, mask) ->
    (B, F)`` and a ``feature_dim`` attribute.

    Args:
        name: the registry key, e.g. ``"netvlad"``.

    Raises:
        ValueError: when ``name`` is already registered (pick another name).
    """

    def decorator(builder: BuilderT) -> BuilderT:
        if name in _HEADS:
            raise ValueError(
                f"head {name!r} is already registered (by {_HEADS[name].__module__}); "
                "choose another name for the new builder"
            )
        _HEADS[name] = builder
        return builder

    return decorator


def _load_builtin_heads() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_heads() -> list[str]:
    """Return the names of all registered heads, sorted."""
    _load_builtin_heads()
    return sorted(_HEADS)


def get_head_builder(name: str) -> HeadBuilder:
    """Return the builder registered under ``name``.

    Raises:
        KeyError: when no head has that name; the message lists the known names.
    """
    _load_builtin_heads()
    try:
        return _HEADS[name]
    except KeyError:
        raise KeyError(
            f"unknown head {name!r}; known heads: {', '.join(sorted(_HEADS))}"
        ) from None


def get_head(name: str, *, in_dim: int, num_classes: int, **kwargs: object) -> nn.Module:
    """Build the head registered under ``name``.

    Args:
        name: a name from :func:`list_heads`.
        in_dim: feature size ``D`` of the clip features ``(B, K, D)``.
        num_classes: number of output logits ``C``.
        **kwargs: the builder's own keyword arguments (``classifier``, ``gating``,
            ``num_clusters``, ...); see the builder's docstring.

    Returns:
        The head module, in training mode.

    Raises:
        KeyError: unknown ``name``.
        TypeError: a keyword the builder does not accept; the message lists the accepted ones.
        ValueError: a value out of range (raised by the builder).
    """
    builder = get_head_builder(name)
    if in_dim < 1 or num_classes < 1:
        raise ValueError(f"in_dim and num_classes must be >= 1, got {in_dim} and {num_classes}")
    accepted = set(inspect.signature(builder).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"head {name!r} does not accept {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(accepted))}"
        )
    logger.debug("building head %s (in_dim=%d, num_classes=%d, %s)", name, in_dim, num_classes,
                 kwargs)
    return builder(in_dim=in_dim, num_classes=num_classes, **kwargs)
