"""Running a recipe: its stages in a work folder, its table, the command behind ``--recipe``.

``python -m benchmarks.recipes NAME [--tiny]`` and ``python -m benchmarks.run --recipe NAME``
both end in :func:`recipe_command`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.pipeline.stages import run_stages
from benchmarks.recipes import steps as rs
from benchmarks.recipes.recipe import Recipe, list_recipes, load_recipe, shrink
from benchmarks.recipes.tables import get_layout
from store.cli import INTERRUPTED, non_negative_int, report_error, run_command
from store.errors import VideoFeatError

__all__ = ["main", "recipe_command", "run_recipe"]


def run_recipe(recipe: Recipe, workdir: str | Path, *, device: str = "auto", workers: int | None = None,
               progress: bool = False, on_stage: Any = None) -> dict[str, Any]:
    """Run (or resume) every stage of ``recipe`` in ``workdir``; write RESULT.md and result.json.

    Returns:
        ``{"recipe", "results" (per stage), "stages" (status and time), "total_seconds", "table"}``.
    """
    ctx = rs.RecipeContext(recipe, Path(workdir), device=device, workers=workers, progress=progress)
    ctx.root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timeline = run_stages(rs.build_stages(ctx), ctx.root / "state.json", ctx.results, on_stage=on_stage)
    backbones = {k: {"label": b.label, "backbone": b.recipe.backbone, "modality": b.recipe.modality}
                 for k, b in recipe.backbones.items()}
    summary = {"recipe": {"name": recipe.name, "title": recipe.title, "follows": recipe.follows,
                          "scaled_down": recipe.scaled_down, "layout": recipe.layout, "backbones": backbones,
                          "sets": {s: k for p in recipe.extract for s, k in p.sets.items()},
                          "extract": [{"sets": list(p.sets), **p.settings} for p in recipe.extract]},
               "results": ctx.results, "stages": timeline, "total_seconds": time.perf_counter() - start}
    summary["table"] = get_layout(recipe.layout)(summary)
    (ctx.root / "result.json").write_text(json.dumps(rs.clean(summary), indent=1) + "\n", encoding="utf-8")
    (ctx.root / "RESULT.md").write_text(summary["table"] + "\n", encoding="utf-8")
    return summary


def recipe_command(name: str, workdir: Path, *, tiny: bool = False, device: str = "auto",
                   workers: int | None = None, progress: bool = True) -> int:
    """``--recipe NAME``: run it, print its table; returns the exit status (2: a user error)."""
    logging.getLogger("extract.backbones.registry").setLevel(logging.ERROR)  # random init is on purpose

    def on_stage(entry: dict[str, Any]) -> None:
        print(f"stage {entry['stage']:<24} {entry['status']:<8} {entry['seconds']:.1f} s", file=sys.stderr, flush=True)

    try:
        recipe = load_recipe(name)
        if tiny:
            recipe = shrink(recipe)
        root = workdir / "recipes" / (recipe.name + ("_tiny" if tiny else ""))
        summary = run_recipe(recipe, root, device=device, workers=workers, progress=progress, on_stage=on_stage)
    except VideoFeatError as err:  # one recipe's mistake; benchmarks.run goes on with the next recipe
        return report_error(err)
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept; rerun the same command to continue", file=sys.stderr)
        return INTERRUPTED
    print(summary["table"])
    print(f"\nwrote {root / 'RESULT.md'} and {root / 'result.json'} ({summary['total_seconds']:.0f} s)")
    return 0


@run_command
def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m benchmarks.recipes``); returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.recipes",
                                 description="Challenge recipes: a published pipeline, scaled down, as one TOML "
                                             "file run end to end.",
                                 epilog=f"recipes: {', '.join(list_recipes())}")
    ap.add_argument("recipe", help="a recipe name or a path to a recipe .toml")
    ap.add_argument("--workdir", type=Path, default=Path("benchmarks/_work"),
                    help="runs go to WORKDIR/recipes/NAME (default benchmarks/_work)")
    ap.add_argument("--tiny", action="store_true", help="smoke-test size: 40 videos of 1 s, 1-2 epochs")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--workers", type=non_negative_int, help="decode worker processes (default: by machine)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return recipe_command(args.recipe, args.workdir, tiny=args.tiny, device=args.device, workers=args.workers,
                          progress=not args.quiet)
