"""Resumable stages: the loop that ``benchmarks.pipeline`` and ``benchmarks.recipes`` share.

Every stage records a key (a hash of its settings and of what the stages it reads from
produced) in a JSON state file. A finished stage whose key is unchanged and whose outputs are
still on disk is skipped ("cached"); an interrupted one continues ("resumed": the libraries
resume from done rows, ``last.pt``, runs already in the store); one whose key changed starts
again ("ran"), and so does every stage downstream of it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.pipeline.steps import digest

log = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclass(frozen=True)
class Stage:
    """One stage: its inputs (earlier stages), settings, work, and the check that its outputs are intact.

    Attributes:
        name: Unique name (the key in the state file and in ``results``).
        deps: Earlier stages whose results this one reads (their keys and results enter its key).
        settings: JSON-able settings of the stage (part of its key).
        run: ``run(fresh) -> result``: does the work (``fresh``: drop old outputs first).
        intact: ``intact(result) -> bool``: are the outputs a cached result describes still there?
    """

    name: str
    deps: tuple[str, ...]
    settings: Any
    run: Callable[[bool], dict[str, Any]]
    intact: Callable[[dict[str, Any]], bool]


def load_state(path: Path) -> dict[str, Any]:
    """The stages' records of a state file ({} when missing, unreadable or of another version)."""
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        log.warning("%s is unreadable (%s): every stage runs again", path, err)
        return {}
    return state.get("stages", {}) if state.get("version") == STATE_VERSION else {}


def save_state(path: Path, stages: dict[str, Any]) -> None:
    """Write the state file atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"version": STATE_VERSION, "stages": stages}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run_stages(stages: Sequence[Stage], state_path: Path, results: dict[str, dict[str, Any]], *,
               on_stage: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run, resume or skip each stage in order; fill ``results[stage.name]``.

    Returns:
        One ``{"stage", "status", "seconds", "computed_seconds"}`` per stage (``status``:
        ``cached``, ``resumed`` or ``ran``; ``computed_seconds``: when it was computed).
    """
    state = load_state(state_path)
    keys: dict[str, str] = {}
    timeline = []
    for stage in stages:
        key = digest({"stage": stage.name, "settings": stage.settings,
                      "inputs": {d: [keys[d], results[d]] for d in stage.deps}})
        keys[stage.name] = key
        record = state.get(stage.name) or {}
        t0 = time.perf_counter()
        if record.get("complete") and record.get("key") == key and stage.intact(record["result"]):
            status, result, computed = "cached", record["result"], record["seconds"]
        else:
            fresh = record.get("key") != key
            log.info("stage %s: %s", stage.name, "starting" if fresh else "resuming")
            state[stage.name] = {"key": key, "complete": False}
            save_state(state_path, state)
            result = stage.run(fresh)
            status, computed = ("ran" if fresh else "resumed"), time.perf_counter() - t0
            state[stage.name] = {"key": key, "complete": True, "seconds": computed, "result": result}
            save_state(state_path, state)
        results[stage.name] = result
        entry = {"stage": stage.name, "status": status, "seconds": time.perf_counter() - t0,
                 "computed_seconds": computed}
        timeline.append(entry)
        if on_stage is not None:
            on_stage(entry)
    return timeline
