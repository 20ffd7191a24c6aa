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
"""

from benchmarks.recipes.analyses import get_analysis, list_analyses
from benchmarks.recipes.recipe import Recipe, RecipeError, list_recipes, load_recipe, shrink
from benchmarks.recipes.runner import main, recipe_command, run_recipe
from benchmarks.recipes.steps import RecipeContext, build_stages
from benchmarks.recipes.tables import get_layout

__all__ = ["Recipe", "RecipeContext", "RecipeError", "build_stages", "get_analysis", "get_layout", "list_analyses",
           "list_recipes", "load_recipe", "main", "recipe_command", "run_recipe", "shrink"]
