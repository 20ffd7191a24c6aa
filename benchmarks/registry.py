"""The benchmark registry: a dict and a decorator."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Benchmark = Callable[[argparse.Namespace], dict[str, Any]]
_BENCHMARKS: dict[str, tuple[Benchmark, str]] = {}


def register_benchmark(name: str, description: str) -> Callable[[Benchmark], Benchmark]:
    def deco(fn: Benchmark) -> Benchmark:
        if name in _BENCHMARKS:
            raise ValueError(f"benchmark {name!r} is registered twice")
        _BENCHMARKS[name] = (fn, description)
        return fn
    return deco


def get_benchmark(name: str) -> Benchmark:
    if name not in _BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; choose from {', '.join(list_benchmarks())}")
    return _BENCHMARKS[name][0]


def list_benchmarks() -> list[str]:
    return list(_BENCHMARKS)


def describe(name: str) -> str:
    return _BENCHMARKS[name][1]
