"""``to_dict`` / ``from_dict`` shared by the frozen settings dataclasses of the fusion methods."""

from __future__ import annotations

import dataclasses
from typing import Any, Self

from fusion.errors import FusionError


class SettingsMixin:
    """Mixin for a frozen dataclass: JSON-able ``to_dict`` and a ``from_dict`` that names unknown keys."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(d or {}) - names)
        if unknown:
            raise FusionError(f"unknown setting(s) {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(names)) or 'none'}")
        return cls(**(d or {}))
