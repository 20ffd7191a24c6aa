"""A sweep's grid file expanded into :class:`~heads.trainer.TrainConfig` objects.

A grid file is TOML with up to four tables (see ``heads/README_sweep.md``)::

    [base]                        # TrainConfig fields every configuration shares
    features = ["rgb_r18"]
    epochs = 10
    head_kwargs = { hidden_dim = 256 }

    [grid]                        # field -> list of values: the cartesian product
    head = ["netvlad", "nextvlad"]
    head_kwargs.num_clusters = [16, 32]      # one keyword of head_kwargs / loss_kwargs
    lr = [1e-3, 3e-3]

    [[runs]]                      # explicit configurations (over [base])
    head = "mean_mlp"

    [random]                      # n seeded samples (over [base])
    n = 8
    seed = 0
    lr = { loguniform = [1e-4, 1e-2] }
    dropout = { uniform = [0.0, 0.5] }
    epochs = { randint = [5, 20] }           # both ends included
    loss = ["bce", "focal"]                  # a list is a uniform choice

``[[grid]]`` (an array of grid tables) gives the union of several products, for keywords that
only some heads take. The sweep is the union of the grid points, the runs and the samples,
duplicates (same config hash) kept once. ``head_kwargs`` / ``loss_kwargs`` merge key by key:
``[base]`` first, then whole-dict values, then single keywords (``head_kwargs.KEY``).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from heads.trainer import TrainConfig
from store.errors import VideoFeatError

__all__ = ["GridError", "expand_grid", "flat_settings", "load_grid", "varied_settings"]

log = logging.getLogger(__name__)

TABLES = ("base", "grid", "runs", "random")
KWARGS_FIELDS = ("head_kwargs", "loss_kwargs")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
_FIELDS = tuple(TrainConfig.__dataclass_fields__)


class GridError(VideoFeatError):
    """A grid file that cannot be expanded (the message names the table and the key)."""


def load_grid(path: str | Path) -> dict[str, Any]:
    """The parsed TOML of a grid file."""
    path = Path(path)
    if not path.is_file():
        raise GridError(f"grid file {path} not found")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path} is not valid TOML: {exc}") from None


def _flatten(table: dict[str, Any], where: str) -> dict[str, Any]:
    """``{field: value, "head_kwargs.KEY": value}``: keyword tables split into single keywords."""
    flat: dict[str, Any] = {}
    for key, value in table.items():
        field, dot, sub = key.partition(".")
        if field not in _FIELDS:
            raise GridError(f"{where}: unknown TrainConfig field {field!r}; fields are {', '.join(_FIELDS)}")
        if dot:
            if field not in KWARGS_FIELDS or not sub or "." in sub:
                raise GridError(f"{where}: {key!r}: only head_kwargs.KEY and loss_kwargs.KEY may be dotted")
            flat[key] = value
        elif field in KWARGS_FIELDS and isinstance(value, dict) and not _is_distribution(value):
            flat.update({f"{field}.{k}": v for k, v in _flatten_kwargs(field, value, where).items()})
        else:
            flat[key] = value
    return flat


def _flatten_kwargs(field: str, table: dict[str, Any], where: str) -> dict[str, Any]:
    for k in table:
        if "." in k:
            raise GridError(f"{where}: {field}.{k}: keyword names cannot hold dots")
    return table


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in DISTRIBUTIONS


def _apply(flat: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Set one flat key; a whole ``head_kwargs`` dict value merges into the keywords so far."""
    if key in KWARGS_FIELDS:
        if not isinstance(value, dict):
            raise GridError(f"{where}: {key} must be a table of keywords, got {value!r}")
        flat.update({f"{key}.{k}": v for k, v in _flatten_kwargs(key, value, where).items()})
    else:
        flat[key] = value


def _build(flat: dict[str, Any]) -> TrainConfig:
    values: dict[str, Any] = {}
    for key, value in flat.items():
        field, dot, sub = key.partition(".")
        if dot:
            values.setdefault(field, {})[sub] = value
        else:
            values[field] = value
    return TrainConfig.from_dict(values)


def _describe(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in changes.items()) or "no changes"


def _config(base: dict[str, Any], changes: list[tuple[str, Any]], where: str) -> TrainConfig:
    flat = dict(base)
    for key, value in sorted(changes, key=lambda kv: kv[0] not in KWARGS_FIELDS):  # whole dicts first
        _apply(flat, key, value, where)
    try:
        return _build(flat)
    except (ValueError, TypeError) as exc:  # TypeError: a value of the wrong type (lr = "fast")
        detail = str(exc).replace("\n", " ")
        raise GridError(f"{where} ({_describe(dict(changes))}): {detail}") from None


def _grid_configs(base: dict[str, Any], grid: dict[str, Any], where: str) -> list[TrainConfig]:
    axes = _flatten(grid, where)
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise GridError(f"{where}.{key} must be a non-empty list of values (e.g. {key} = [a, b]); "
                            "put a single value in [base]")
    points = list(itertools.product(*axes.values()))
    return [_config(base, list(zip(axes, point)), f"{where} point {i + 1} of {len(points)}")
            for i, point in enumerate(points)]


def _pair(spec: list[Any], kind: str, where: str) -> tuple[float, float]:
    if (not isinstance(spec, list) or len(spec) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec)):
        raise GridError(f"{where}: {kind} takes two numbers [low, high], got {spec!r}")
    low, high = spec
    if not low <= high or (kind != "randint" and low == high):
        raise GridError(f"{where}: {kind} needs low < high, got {spec!r}")
    if kind == "loguniform" and low <= 0:
        raise GridError(f"{where}: loguniform needs low > 0, got {spec!r}")
    if kind == "randint" and not (float(low).is_integer() and float(high).is_integer()):
        raise GridError(f"{where}: randint takes two integers, got {spec!r}")
    return low, high


def _check_distribution(key: str, spec: Any, where: str) -> tuple[str, Any]:
    """``(kind, parameters)`` of a [random] entry (a list is a choice)."""
    w = f"{where}.{key}"
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not _is_distribution(spec):
        raise GridError(f"{w} must be a list of choices or one of {{ {' | '.join(DISTRIBUTIONS)} = [...] }}, "
                        f"got {spec!r}")
    kind, params = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(params, list) or not params:
            raise GridError(f"{w}: choice takes a non-empty list of values")
        return kind, params
    return kind, _pair(params, kind, w)


def _sample(kind: str, params: Any, rng: np.random.Generator) -> Any:
    if kind == "choice":
        return params[int(rng.integers(len(params)))]
    low, high = params
    if kind == "randint":
        return int(rng.integers(int(low), int(high) + 1))
    if kind == "uniform":
        x = rng.uniform(low, high)
    else:
        x = math.exp(rng.uniform(math.log(low), math.log(high)))
    return float(f"{x:.4g}")  # four significant digits: readable run tables, same search


def _random_configs(base: dict[str, Any], table: dict[str, Any], where: str) -> list[TrainConfig]:
    table = dict(table)
    n, seed = table.pop("n", None), table.pop("seed", 0)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise GridError(f"{where}.n must be the number of samples (an integer >= 1), got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise GridError(f"{where}.seed must be an integer, got {seed!r}")
    space = {key: _check_distribution(key, spec, where) for key, spec in sorted(_flatten(table, where).items())}
    if not space:
        raise GridError(f"{where} has nothing to sample: add e.g. lr = {{ loguniform = [1e-4, 1e-2] }}")
    rng = np.random.default_rng(seed)
    return [_config(base, [(key, _sample(kind, p, rng)) for key, (kind, p) in space.items()],
                    f"{where} sample {i + 1} of {n}") for i in range(n)]


def expand_grid(spec: dict[str, Any], *, name: str = "grid") -> list[TrainConfig]:
    """Every configuration of a parsed grid file, each validated, duplicates dropped.

    Args:
        spec: The parsed TOML (:func:`load_grid`).
        name: The file's name, for error messages.

    Raises:
        GridError: unknown table or field, a bad value or distribution, an invalid TrainConfig
            (the message names the grid point, run or sample and its values), no configuration.
    """
    unknown = sorted(set(spec) - set(TABLES))
    if unknown:
        raise GridError(f"{name}: unknown table(s) {', '.join(unknown)}; a grid file has {', '.join(TABLES)}")
    for table in ("base", "random"):
        if not isinstance(spec.get(table, {}), dict):
            raise GridError(f"{name}: [{table}] must be a table")
    base = _flatten(spec.get("base", {}), f"{name} [base]")
    grids = spec.get("grid", [])
    grids = [grids] if isinstance(grids, dict) else grids
    runs = spec.get("runs", [])
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise GridError(f"{name}: runs must be an array of tables ([[runs]])")
    if not isinstance(grids, list) or not all(isinstance(g, dict) for g in grids):
        raise GridError(f"{name}: grid must be a table ([grid]) or an array of tables ([[grid]])")
    configs: list[TrainConfig] = []
    for i, grid in enumerate(grids):
        configs += _grid_configs(base, grid, f"{name} [grid]" if len(grids) == 1 else f"{name} [[grid]] #{i + 1}")
    for i, run in enumerate(runs):
        w = f"{name} [[runs]] #{i + 1}"
        configs.append(_config(base, list(_flatten(run, w).items()), w))
    if "random" in spec:
        configs += _random_configs(base, spec["random"], f"{name} [random]")
    if not configs:
        raise GridError(f"{name} defines no configuration: add a [grid], [[runs]] or [random] table")
    unique: dict[str, TrainConfig] = {}
    for config in configs:
        unique.setdefault(config.config_hash(), config)
    if len(unique) < len(configs):
        log.info("%s: %d duplicate configuration(s) dropped", name, len(configs) - len(unique))
    return list(unique.values())


def flat_settings(config: TrainConfig) -> dict[str, Any]:
    """The config's fields with its keywords as ``head_kwargs.KEY`` / ``loss_kwargs.KEY`` entries."""
    d = config.to_dict()
    flat = {k: v for k, v in d.items() if k not in KWARGS_FIELDS}
    for field in KWARGS_FIELDS:
        flat.update({f"{field}.{k}": v for k, v in sorted(d[field].items())})
    return flat


def varied_settings(configs: list[TrainConfig], skip: tuple[str, ...] = ("head", "loss", "features", "device"),
                    ) -> list[str]:
    """The :func:`flat_settings` keys (``lr``, ``head_kwargs.num_clusters``...) whose values differ."""
    flats = [flat_settings(c) for c in configs]
    keys = list(dict.fromkeys(k for f in flats for k in f if k not in skip))
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
