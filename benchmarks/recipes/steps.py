"""The stages of a recipe run (:mod:`benchmarks.recipes`), built on the demo pipeline's helpers.

::

    demo          extract.demo.make_demo, shared by recipes with the same [demo] (recipes/_demo/<hash>)
    train_KEY     extract.training.fit per [backbones.KEY]            -> runs/KEY/backbone.pt
    extract_N     extract.dump.pipeline.extract per [[extract]] pass         -> store.zarr sets (+ <set>_logits runs)
    heads         heads.sweep.run_sweep over [heads]                    -> one prediction run per config
    knn           heads.knn.write_knn_run per [knn] set (optional)
    fusion        fusion.fuse_runs over [fusion] inputs, every method   -> fused_<method> run + report
    analysis_NAME the layout's analyses (benchmarks.recipes.tables)

Every stage's result holds the metrics of the runs it wrote (val and test, per class family),
so the tables are drawn from ``result.json`` alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.pipeline.stages import Stage
from benchmarks.pipeline.steps import (
    PipelineError,
    clean,
    demo_matches,
    demo_record,
    digest,
    extract_sets,
    families_from,
    fusion_metrics,
    score_run,
    train_backbone,
    weights_intact,
)
from benchmarks.recipes.analyses import best_run, get_analysis
from benchmarks.recipes.recipe import Recipe

__all__ = ["RecipeContext", "build_stages", "clean"]


@dataclass
class RecipeContext:
    """A recipe run's settings, folders and stage results."""

    recipe: Recipe
    root: Path
    device: str = "auto"
    workers: int | None = None
    progress: bool = False
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def store(self) -> Path:
        return self.root / "store.zarr"

    @property
    def demo_dir(self) -> Path:
        """Shared by every recipe run under the same parent with the same demo settings."""
        return self.root.parent / "_demo" / digest(self.recipe.demo.to_dict())

    def families(self) -> dict[str, list[int]]:
        return families_from(self.results["demo"])

    def open(self, mode: str = "r") -> Any:
        from store import FeatureStore

        return FeatureStore.open(self.store, mode)


# ------------------------------------------------------------------------------------ stages
def _demo(ctx: RecipeContext, fresh: bool) -> dict[str, Any]:
    from extract.demo import make_demo

    return demo_record(make_demo(ctx.demo_dir, ctx.recipe.demo, progress=ctx.progress))


def _train(ctx: RecipeContext, key: str, fresh: bool) -> dict[str, Any]:
    spec = ctx.recipe.backbones[key]
    return train_backbone(ctx.demo_dir, spec.recipe, ctx.root / "runs" / key, ctx.root, par=ctx,
                          progress=ctx.progress, fresh=fresh, label=key)


def _extract(ctx: RecipeContext, i: int, fresh: bool) -> dict[str, Any]:
    from extract.demo import load_demo
    from extract.dump.settings import BackboneChoice

    p = ctx.recipe.extract[i]
    choices = []
    for set_name, key in p.sets.items():
        r = ctx.recipe.backbones[key].recipe
        weights = str(ctx.root / ctx.results[f"train_{key}"]["weights"])
        choices.append(BackboneChoice(r.backbone, r.modality, weights=weights, set_name=set_name))
    settings = {"seed": ctx.recipe.demo.seed, **p.settings}
    settings["scales"] = tuple(settings.get("scales", ()))
    sets = extract_sets(load_demo(ctx.demo_dir), ctx.store, tuple(choices), settings, par=ctx,
                        progress=ctx.progress, fresh=fresh, desc=f"extract {'+'.join(p.sets)}")
    fs, fams = ctx.open(), ctx.families()
    runs = {f"{s}_logits": score_run(fs, f"{s}_logits", fams) for s in p.sets if p.settings.get("head_logits")}
    return clean({"sets": sets, "runs": runs})


def _sets_intact(ctx: RecipeContext, result: dict[str, Any]) -> bool:
    from store.errors import StoreError

    try:
        fs = ctx.open()
        return all(s in fs.feature_sets() and int(fs.feature_set(s).done().sum()) == r["done"]
                   for s, r in result["sets"].items()) and set(result["runs"]) <= set(fs.prediction_runs())
    except StoreError:
        return False


def _heads(ctx: RecipeContext, fresh: bool) -> dict[str, Any]:
    from heads import expand_grid
    from heads.sweep import run_sweep
    from store.threads import available_cores

    configs = expand_grid(ctx.recipe.heads, name=f"{ctx.recipe.name} [heads]")
    table = run_sweep(ctx.store, configs, torch_threads=available_cores(), resume=not fresh, progress=ctx.progress)
    fs, fams = ctx.open(), ctx.families()
    by_hash = {c.config_hash(): c for c in configs}
    runs = []
    for row in table.to_dict("records"):
        c = by_hash[row["config_hash"]]
        ok = row["status"] != "failed"
        runs.append({"run": row["run"], "features": "+".join(c.features), "head": c.head, "loss": c.loss,
                     "head_kwargs": c.head_kwargs, "mixup_alpha": c.mixup_alpha, "folds": c.folds,
                     "status": "ok" if ok else "failed", "error": row["error"] or None,
                     "scores": score_run(fs, row["run"], fams) if ok else None})
    failed = [r for r in runs if r["status"] == "failed"]
    if failed and len(failed) == len(runs):
        raise PipelineError(f"every head of the recipe failed; the first: {failed[0]['error']}")
    return clean({"runs": runs})


def _runs_intact(ctx: RecipeContext, result: dict[str, Any]) -> bool:
    have = set(ctx.open().prediction_runs())
    return all(r["run"] in have for r in result["runs"] if r["status"] == "ok")


def _knn(ctx: RecipeContext, fresh: bool) -> dict[str, Any]:
    from heads.knn import write_knn_run

    spec = ctx.recipe.knn or {}
    fs, fams = ctx.open("a"), ctx.families()
    runs = []
    for s in spec.get("sets", []):
        k = write_knn_run(fs, s, run=f"knn_{s}", k=spec.get("k", 10), folds=spec.get("folds", 5),
                          seed=ctx.recipe.demo.seed)
        runs.append({"run": k.run, "features": s, "head": f"knn k={spec.get('k', 10)}", "status": "ok",
                     "scores": score_run(fs, k.run, fams)})
    return clean({"runs": runs})


def fusion_inputs(ctx: RecipeContext) -> list[str]:
    """[fusion] inputs resolved to run names: ``best:SET`` is the best head run on SET (val class
    mAP), ``all:SET`` every head run on SET, anything else a run name."""
    out: list[str] = []
    for ref in ctx.recipe.fusion["inputs"]:
        kind, _, features = ref.partition(":")
        if kind == "best" and features:
            out.append(best_run(ctx, features))
        elif kind == "all" and features:
            out += [r["run"] for r in ctx.results["heads"]["runs"] if r["features"] == features and r["status"] == "ok"]
        else:
            out.append(ref)
    return list(dict.fromkeys(out))


def _fusion(ctx: RecipeContext, fresh: bool) -> dict[str, Any]:
    from fusion import fuse_runs, write_report

    spec = ctx.recipe.fusion
    inputs = fusion_inputs(ctx)
    methods = list(spec["methods"])
    fused = f"fused_{methods[0]}"
    result = fuse_runs(ctx.store, inputs, method=methods[0], compare=methods[1:], fit_split=spec["fit_split"],
                       eval_split=spec["eval_split"], write_as=fused, overwrite=True)
    report = write_report(result, ctx.root / "fusion")
    methods_out, input_metrics = fusion_metrics(result, ctx.families(),
                                                ("class_map", "sample_map", "gap20", "top1", "top5"))
    return clean({"inputs": inputs, "fused_run": fused, "fit_split": spec["fit_split"],
                  "eval_split": spec["eval_split"], "fit_rows": len(result.plan.fit_rows),
                  "eval_rows": len(result.plan.eval_rows), "methods": methods_out, "input_metrics": input_metrics,
                  "report": str(report.relative_to(ctx.root))})


def _fusion_intact(ctx: RecipeContext, result: dict[str, Any]) -> bool:
    return result["fused_run"] in ctx.open().prediction_runs() and (ctx.root / result["report"]).is_file()


def build_stages(ctx: RecipeContext) -> list[Stage]:
    """The recipe's stages in order, bound to ``ctx``."""

    r = ctx.recipe

    def bound(fn: Any, *args: Any) -> Any:
        return lambda x: fn(ctx, *args, x)

    used = list(dict.fromkeys(k for p in r.extract for k in p.sets.values()))
    stages = [Stage("demo", (), r.demo.to_dict(), bound(_demo), lambda result: demo_matches(ctx.demo_dir, result))]
    stages += [Stage(f"train_{k}", ("demo",), {k2: v for k2, v in r.backbones[k].recipe.to_dict().items()
                                               if k2 != "device"}, bound(_train, k),
                     lambda result: weights_intact(ctx.root, result))
               for k in used]
    extracts = []
    for i, p in enumerate(r.extract):
        name = f"extract_{i + 1}"
        deps = ("demo", *dict.fromkeys(f"train_{k}" for k in p.sets.values()))
        stages.append(Stage(name, deps, {"sets": p.sets, "settings": p.settings, "seed": r.demo.seed},
                            bound(_extract, i), bound(_sets_intact)))
        extracts.append(name)
    from heads import expand_grid

    hashes = [c.config_hash() for c in expand_grid(r.heads, name=r.name)]
    stages.append(Stage("heads", ("demo", *extracts), hashes, bound(_heads), bound(_runs_intact)))
    upstream = ["heads"]
    if r.knn:
        stages.append(Stage("knn", ("demo", *extracts), r.knn, bound(_knn), bound(_runs_intact)))
        upstream.append("knn")
    stages.append(Stage("fusion", ("demo", *extracts, *upstream), r.fusion, bound(_fusion), bound(_fusion_intact)))
    for name, settings in r.analyses.items():
        get_analysis(name)  # an unknown name fails before any work
        stages.append(Stage(f"analysis_{name}", ("demo", *extracts, *upstream, "fusion"), settings,
                            bound(_analysis, name, settings), lambda result: True))
    return stages


def _analysis(ctx: RecipeContext, name: str, settings: dict[str, Any], fresh: bool) -> dict[str, Any]:
    """Run the analysis ``name`` (registered in :mod:`benchmarks.recipes.tables`) with its settings."""

    return clean(get_analysis(name)(ctx, settings))
