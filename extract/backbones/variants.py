"""Variants as table entries: one builder per entry, made from the family's ``create`` function.

The way timm (``default_cfgs`` + ``_create_resnet(variant, **model_args)``) and torchvision do
it: variants of a family that differ only by numbers are one entry each in a table, and one
``create(name, **entry, **kwargs)`` builds any of them. Adding a variant is one entry::

    VARIANTS = {
        "r2plus1d_18": {"doc": "R(2+1)D-18: ...", "arch": "r2plus1d", "tiny": False},
        "r2plus1d_tiny": {"doc": "Test / CPU-smoke variant ...", "arch": "r2plus1d", "tiny": True},
    }
    register_variants(register_backbone, _video_backbone, VARIANTS)

Each registered builder is a plain function named after its variant, with the entry's ``doc``
as its docstring and the signature of ``create`` without ``name`` and the entry's fixed keys:
the user's keyword overrides (``clip_len``, ``dropout``, ``num_clusters`` ...) pass through, and
a keyword the entry fixes is refused. An entry's ``defaults`` (e.g. ``{"clip_len": 4}``) are
the variant's own defaults of keywords the user may still override.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def variant_builder(name: str, create: Callable[..., T], config: Mapping[str, Any]) -> Callable[..., T]:
    """The builder of variant ``name``: ``create(name, **config, **kwargs)``.

    Args:
        name: the variant's registered name (``create``'s first argument).
        create: the family's builder; its other keywords are the variant's options.
        config: the table entry: ``doc`` (the builder's docstring), optional ``defaults``
            (overridable keyword defaults) and ``create``'s fixed arguments.
    """
    fixed = {k: v for k, v in config.items() if k not in ("doc", "defaults")}
    defaults = dict(config.get("defaults", {}))
    sig = inspect.signature(create)
    assert set(fixed) | set(defaults) <= set(sig.parameters), (name, sorted(fixed), sorted(defaults))

    def build(**kwargs: Any) -> T:
        taken = sorted(set(kwargs) & set(fixed))
        if taken:
            raise TypeError(f"{name}() got unexpected keyword argument(s) {taken}: the variant fixes them")
        return create(name, **fixed, **{**defaults, **kwargs})

    build.__signature__ = sig.replace(parameters=[  # type: ignore[attr-defined]
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=defaults.get(p.name, p.default))
        for p in sig.parameters.values() if p.name != "name" and p.name not in fixed])
    build.__name__ = build.__qualname__ = name
    build.__module__ = create.__module__
    build.__doc__ = config.get("doc")
    return build


def register_variants(register: Callable[[str], Callable[[Callable[..., T]], Callable[..., T]]],
                      create: Callable[..., T], table: Mapping[str, Mapping[str, Any]]) -> None:
    """Register one :func:`variant_builder` per entry of ``table`` with ``register(name)``."""
    for name, config in table.items():
        register(name)(variant_builder(name, create, config))
