"""``--config file.toml`` for the extract commands: TOML keys are the commands' flag names."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from extract.errors import ExtractError


def read_toml_config(parser: argparse.ArgumentParser, path: Path, *,
                     extra_keys: Collection[str] = ()) -> dict[str, Any]:
    """Map a TOML file's keys to parser destinations (``dest -> value``).

    Keys may be written as flag names (``batch-size``) or destinations (``batch_size``);
    values of ``type=Path`` flags become Paths. ``extra_keys`` are accepted as they are
    (e.g. recipe fields without a flag). Any other key is an error naming the flags.
    """
    try:
        with open(path, "rb") as f:
            cfg = tomllib.load(f)
    except FileNotFoundError:
        raise ExtractError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ExtractError(f"{path}: not valid TOML ({err})") from None
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    aliases = {s.lstrip("-").replace("-", "_"): a.dest for a in parser._actions for s in a.option_strings}
    values: dict[str, Any] = {}
    for key, value in cfg.items():
        dest = aliases.get(key.replace("-", "_"), key.replace("-", "_"))
        if dest not in actions and dest not in extra_keys:
            raise ExtractError(
                f"{path}: unknown key {key!r}; keys are the flag names: {', '.join(sorted(aliases))}"
            )
        action = actions.get(dest)
        if action is not None and action.type is Path and value is not None:
            value = Path(value)
        values[dest] = value
    return values
