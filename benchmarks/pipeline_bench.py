"""Demo pipeline: class mAP of every modality x head, kNN and fusion, and the time of each stage.

Runs :func:`benchmarks.pipeline.run_pipeline` (the main job: demo videos, three backbones
trained briefly, one-pass extraction, head sweep, kNN, fusion) in
``<workdir>/pipeline/<preset>-<videos>``. Without ``--size`` it is the ``small`` preset
(600 videos, about 11 minutes on 2 CPU cores); ``--size N`` sets the number of videos, on
the ``tiny`` preset (48 px, 1 s, 1 epoch: a smoke run) up to ``TINY_MAX_VIDEOS`` videos and
on ``small`` above. The pipeline caches its stages, so a rerun takes seconds; the stage
seconds reported are those of the run that computed each stage.

Metrics (test split unless named otherwise; mAP as fractions):

* ``<modality>_<head>_test_map`` / ``_val_map``: each head of the sweep on each modality's
  features; ``<modality>_knn_test_map``: kNN label transfer; ``<modality>_backbone_val_map``:
  the backbone's own classifier after training (val);
* ``fusion_<method>_test_map``: XGBoost stacking and the compared fusions (mean, weighted,
  logistic) over the best head of each modality; ``best_single_test_map``: the best of
  those inputs (``best_single_input`` names its modality);
* ``stage_<name>_s``: computed seconds per stage, ``total_computed_s``, ``this_run_s``.

Targets (as for the fusion benchmark): XGBoost fusion >= best single input + 5 points and
>= the weighted and logistic fusions.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from benchmarks.registry import register_benchmark

TINY_MAX_VIDEOS = 100


def pipeline_size(size: int | None) -> tuple[str, dict[str, Any]]:
    """``(preset, PipelineConfig keywords)`` for ``--size`` (videos; None: the small preset)."""
    from benchmarks.pipeline.job import SIZES

    if size is None:
        return "small", dict(SIZES["small"])
    preset = "tiny" if size <= TINY_MAX_VIDEOS else "small"
    return preset, {**SIZES[preset], "videos": size}


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """The flat metrics of a :func:`run_pipeline` summary (see the module docstring)."""
    from benchmarks.pipeline.steps import MODALITIES

    res = summary["results"]
    m: dict[str, Any] = {"videos": res["demo"]["videos"], "classes": len(res["demo"]["classes"])}
    for mod in MODALITIES:
        m[f"{mod}_backbone_val_map"] = res[f"train_{mod}"].get("val_class_map")
    for stage, runs in (("sweep", res["sweep"]["runs"]), ("knn", res["knn"]["runs"])):
        for r in runs:
            head = "knn" if stage == "knn" else r["head"]
            for split in ("val", "test"):
                m[f"{r['modality']}_{head}_{split}_map"] = (((r.get("scores") or {}).get(split)) or {}).get("class_map")
    fu = res["fusion"]
    for method, v in fu["methods"].items():
        m[f"fusion_{method}_test_map"] = v.get("class_map")
    inputs = {mod: fu["input_metrics"][run].get("class_map") for mod, run in fu["inputs"].items()}
    scored = {mod: v for mod, v in inputs.items() if v is not None}
    if scored:
        best = max(scored, key=scored.__getitem__)
        m["best_single_input"], m["best_single_test_map"] = best, scored[best]
    for t in summary["stages"]:
        m[f"stage_{t['stage']}_s"] = t["computed_seconds"]
    m["total_computed_s"] = sum(t["computed_seconds"] for t in summary["stages"])
    m["this_run_s"] = summary["total_seconds"]
    m["stages_cached"] = sum(t["status"] == "cached" for t in summary["stages"])
    return m


@register_benchmark("pipeline", "the demo pipeline end to end: mAP per modality x head, kNN, fusion; time per stage")
def bench_pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.pipeline.job import PipelineConfig, format_summary, run_pipeline

    preset, values = pipeline_size(args.size)
    config = PipelineConfig(**values)
    work = Path(args.workdir) / "pipeline" / f"{preset}-{config.videos}"
    print(f"   preset {preset}, {config.videos} videos, in {work} (finished stages are reused)")

    def on_stage(entry: dict[str, Any]) -> None:
        print(f"   stage {entry['stage']:<12} {entry['status']:<8} {entry['seconds']:7.1f} s"
              f" (computed in {entry['computed_seconds']:.1f} s)", flush=True)

    # Training starts every backbone from random init on purpose: no "randomly initialised" warnings.
    quiet = logging.getLogger("extract.backbones.registry")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        summary = run_pipeline(config, work, progress=sys.stderr.isatty(), on_stage=on_stage)
    finally:
        quiet.setLevel(level)
    print("   " + format_summary(summary).replace("\n", "\n   "))
    m = summary_metrics(summary)
    xgb, best = m.get("fusion_xgboost_test_map"), m.get("best_single_test_map")
    if xgb is not None and best is not None:
        print(f"   xgboost fusion {100 * xgb:.1f} vs best single input ({m['best_single_input']}) {100 * best:.1f} "
              f"test class mAP: {100 * (xgb - best):+.1f} points (target >= +5)")
    return m
