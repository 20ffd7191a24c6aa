"""The five challenge recipes: a published pipeline, scaled down, as one TOML file run end to end.

The recipe files sit beside this package's modules (``benchmarks/recipes/NAME.toml``, README.md).

Public API::

    Recipe, load_recipe, list_recipes,     benchmarks.recipes.recipe (the file format, validated before any work)
      shrink, RecipeError
    run_recipe, recipe_command, main       benchmarks.recipes.runner (python -m benchmarks.recipes NAME,
                                             python -m benchmarks.run --recipe NAME)
    RecipeContext, build_stages            benchmarks.recipes.steps (the stages of a recipe run)
    get_analysis, list_analyses            benchmarks.recipes.analyses ([analyses.NAME]: thresholds, ...)
    get_layout                             benchmarks.recipes.tables (each report's table layout)

Exports are lazy (PEP 562).
"""

import importlib
from typing import Any

_MODULES = {
    "benchmarks.recipes.recipe": ("Recipe", "RecipeError", "list_recipes", "load_recipe", "shrink"),
    "benchmarks.recipes.runner": ("main", "recipe_command", "run_recipe"),
    "benchmarks.recipes.steps": ("RecipeContext", "build_stages"),
    "benchmarks.recipes.analyses": ("get_analysis", "list_analyses"),
    "benchmarks.recipes.tables": ("get_layout",),
}
_EXPORTS = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'benchmarks.recipes' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
