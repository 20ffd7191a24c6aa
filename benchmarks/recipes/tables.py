"""The recipes' tables, each in the layout of the report it follows (``layout = NAME`` in a recipe).

A layout is ``fn(summary) -> Markdown`` over a recipe run's ``result.json`` (see
:func:`benchmarks.recipes.runner.run_recipe`); every figure comes from there. All figures are in %:
class mAP (the challenges' metric), GAP@20, and top-1 / top-5 (a video counts as a hit when one
of its k highest-scored classes is one of its labels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks import _markdown as markdown
from benchmarks._markdown import pct

Layout = Callable[[dict[str, Any]], str]
_LAYOUTS: dict[str, Layout] = {}


def register_layout(name: str) -> Callable[[Layout], Layout]:
    def deco(fn: Layout) -> Layout:
        if name in _LAYOUTS:
            raise ValueError(f"layout {name!r} is registered twice")
        _LAYOUTS[name] = fn
        return fn
    return deco


def get_layout(name: str) -> Layout:
    if name not in _LAYOUTS:
        raise KeyError(f"unknown layout {name!r}; choose from {sorted(_LAYOUTS)}")
    return _LAYOUTS[name]


# ---------------------------------------------------------------------------------------- helpers
def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table and the blank line after it."""
    return [*markdown.table(header, rows), ""]


def header(s: dict[str, Any]) -> list[str]:
    r, demo = s["recipe"], s["results"]["demo"]
    splits = " / ".join(f"{demo['splits'].get(k, 0)} {k}" for k in ("train", "val", "test"))
    return [f"# Recipe `{r['name']}`: {r['title']}", "", f"Follows: {r['follows']}", "",
            f"Scaled down: {' '.join(r['scaled_down'].split())}", "",
            f"Demo set: {demo['videos']} videos ({splits}), {len(demo['classes'])} classes. Figures in %, on the "
            "demo's test split unless a column says val.", ""]


def all_runs(s: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Run name -> ``{"scores", "features", "head", ...}`` for every run the recipe wrote."""
    res = s["results"]
    out: dict[str, dict[str, Any]] = {}
    for key, stage in res.items():
        if key.startswith("extract_"):
            for run, scores in stage["runs"].items():
                out[run] = {"run": run, "features": run.removesuffix("_logits"), "head": "backbone classifier",
                            "scores": scores, "status": "ok"}
    for key in ("heads", "knn"):
        for r in (res.get(key) or {}).get("runs", []):
            out[r["run"]] = r
    return out


def metric(run: dict[str, Any] | None, split: str, key: str) -> str:
    return pct((((run or {}).get("scores") or {}).get(split) or {}).get(key))


def set_label(s: dict[str, Any], set_name: str) -> str:
    key = s["recipe"]["sets"].get(set_name)
    return s["recipe"]["backbones"][key]["label"] if key else set_name


def views(s: dict[str, Any], set_name: str) -> str:
    """A set's test-time views, e.g. ``6 clips x center`` or ``4 dense clips x three crops x 2 scales``."""
    for p in s["recipe"]["extract"]:
        if set_name in p["sets"]:
            clips = p.get("clips", 8)
            dense = "dense " if p.get("sampling") == "dense" else ""
            crops = p.get("crops", "center")
            scales = f" x {1 + len(p['scales'])} scales" if p.get("scales") else ""
            return (f"{clips} {dense}clip{'s' if clips > 1 else ''} x "
                    f"{crops}{' crops' if crops != 'center' else ''}{scales}")
    return "-"


def fusion_rows(s: dict[str, Any], keys: tuple[str, ...] = ("class_map", "gap20")) -> list[str]:
    fu = s["results"]["fusion"]
    runs = all_runs(s)
    rows = [[f"input: {set_label(s, runs.get(run, {}).get('features', run))} ({runs.get(run, {}).get('head', '-')})",
             *(pct(v.get(k)) for k in keys)] for run, v in fu["input_metrics"].items()]
    rows += [[f"**{name}**" if i == 0 else name, *(pct(v.get(k)) for k in keys)]
             for i, (name, v) in enumerate(fu["methods"].items())]
    names = {"class_map": "mAP", "gap20": "GAP@20", "top1": "top-1", "top5": "top-5", "sample_map": "sample mAP"}
    return [f"Ensemble: fitted on {fu['fit_split']} ({fu['fit_rows']} rows"
            + (", out-of-fold" if fu["fit_split"] == "train" else "") + f"), scored on {fu['eval_split']} "
            f"({fu['eval_rows']} rows); the first method is written as `{fu['fused_run']}`.", "",
            *table(["model", *(names[k] for k in keys)], rows)]


def stage_times(s: dict[str, Any]) -> list[str]:
    rows = [[t["stage"], t["status"], f"{t['computed_seconds']:.0f}"] for t in s["stages"]]
    rows.append(["total", "", f"{sum(t['computed_seconds'] for t in s['stages']):.0f}"])
    return ["Time per stage (s, when computed):", "", *table(["stage", "status", "seconds"], rows)]


def head_name(r: dict[str, Any]) -> str:
    kw = r.get("head_kwargs") or {}
    if r["head"] == "mean_mlp" and kw.get("hidden_dim", 0) is None:
        return "linear on the clip average"
    return r["head"] + (f" (loss {r['loss']})" if r.get("loss") not in (None, "bce") else "")


def _model_rows(s: dict[str, Any], keys: tuple[tuple[str, str], ...], *, with_views: bool) -> list[list[str]]:
    rows = []
    runs = all_runs(s)
    for set_name in s["recipe"]["sets"]:
        key = s["recipe"]["sets"][set_name]
        b = s["recipe"]["backbones"][key]
        for r in (r for r in runs.values() if r["features"] == set_name):
            cells = [b["modality"], b["label"], *([views(s, set_name)] if with_views else []),
                     head_name(r)]
            rows.append(cells + [metric(r, split, k) for split, k in keys])
    return rows


# ---------------------------------------------------------------------------------------- layouts
@register_layout("alibaba_aic")
def alibaba_aic(s: dict[str, Any]) -> str:
    """Per-modality single models (backbone with N clips averaged, heads), then the ensemble."""
    keys = (("val", "class_map"), ("test", "class_map"), ("test", "gap20"))
    lines = header(s) + ["## Table 1. Single models per modality", ""]
    lines += table(["modality", "model", "test-time clips", "classifier", "val mAP", "test mAP", "test GAP@20"],
                   _model_rows(s, keys, with_views=True))
    train = [[s["recipe"]["backbones"][k.removeprefix("train_")]["label"], str(v["epochs"]),
              v["recipe"]["loss"], v["recipe"]["schedule"], str(v["recipe"]["swa_epochs"]), pct(v["val_class_map"])]
             for k, v in s["results"].items() if k.startswith("train_")]
    lines += ["## Table 2. Training recipes (val mAP of the training run's own evaluation)", ""]
    lines += table(["model", "epochs", "loss", "schedule", "SWA epochs", "val mAP"], train)
    lines += ["## Table 3. Ensemble", ""] + fusion_rows(s) + stage_times(s)
    return "\n".join(lines)


@register_layout("sensetime")
def sensetime(s: dict[str, Any]) -> str:
    """Models x testing strategy (one view vs dense multi-clip, three-crop, multi-scale), ensemble."""
    runs = all_runs(s)
    by_backbone: dict[str, list[str]] = {}
    for set_name, key in s["recipe"]["sets"].items():
        by_backbone.setdefault(key, []).append(set_name)
    strategies = list(dict.fromkeys(views(s, x) for sets in by_backbone.values() for x in sets))
    rows = []
    for key, sets in by_backbone.items():
        b = s["recipe"]["backbones"][key]
        cells = {views(s, x): metric(runs.get(f"{x}_logits"), "test", "class_map") for x in sets}
        rows.append([b["label"], b["backbone"], *(cells.get(v, "-") for v in strategies)])
    lines = header(s) + ["## Table 1. Models and testing strategies (test mAP of each model's own classifier, "
                         "scores averaged over the views)", ""]
    lines += table(["method", "backbone", *strategies], rows)
    heads = [[set_label(s, r["features"]), views(s, r["features"]), head_name(r), metric(r, "val", "class_map"),
              metric(r, "test", "class_map")] for r in s["results"]["heads"]["runs"] if r["status"] == "ok"]
    lines += ["## Table 2. Classifiers re-fitted on the cached features", ""]
    lines += table(["model", "views", "classifier", "val mAP", "test mAP"], heads)
    lines += ["## Table 3. Ensemble", ""] + fusion_rows(s) + stage_times(s)
    return "\n".join(lines)


@register_layout("qiniu")
def qiniu(s: dict[str, Any]) -> str:
    """Model | modality | top-1 | top-5 | mAP, then the ensemble with the same columns."""
    keys = (("test", "top1"), ("test", "top5"), ("test", "class_map"))
    lines = header(s) + ["## Table 1. Single models", ""]
    rows = [[r[1], r[0], r[2], *r[3:]] for r in _model_rows(s, keys, with_views=False)]
    lines += table(["model", "modality", "classifier", "top-1", "top-5", "mAP"], rows)
    lines += ["## Table 2. Ensemble", ""] + fusion_rows(s, ("top1", "top5", "class_map")) + stage_times(s)
    return "\n".join(lines)


@register_layout("ripple_snu")
def ripple_snu(s: dict[str, Any]) -> str:
    """Features x pooling heads (mAP / GAP), thresholds on LSEP scores, weighted ensemble."""
    heads_runs = [r for r in s["results"]["heads"]["runs"] if r["status"] == "ok"]
    cols = list(dict.fromkeys(r["head"] for r in heads_runs))
    rows = []
    for set_name in s["recipe"]["sets"]:
        cell = {r["head"]: f"{metric(r, 'test', 'class_map')} / {metric(r, 'test', 'gap20')}"
                for r in heads_runs if r["features"] == set_name}
        rows.append([set_label(s, set_name), *(cell.get(c, "-") for c in cols)])
    loss = {r["loss"] for r in heads_runs}
    lines = header(s) + [f"## Table 1. Features x non-local gated pooling heads (test mAP / GAP@20; loss "
                         f"{', '.join(sorted(loss))})", ""]
    lines += table(["features", *cols], rows)
    th = s["results"].get("analysis_thresholds")
    if th:
        lines += [f"## Table 2. Decisions from the scores of `{th['run']}` ({th['head']} on "
                  f"{set_label(s, th['features'])}): thresholds fitted on {th['fit_rows']} out-of-fold train rows, "
                  f"scored on {th['eval_rows']} test rows "
                  f"({th['true_labels_per_video']:.2f} true labels per video)", ""]
        lines += table(["decision rule", "micro P", "micro R", "micro F1", "macro F1", "labels / video"],
                       [[name, pct(m["micro_precision"]), pct(m["micro_recall"]), pct(m["micro_f1"]),
                         pct(m["macro_f1"]), f"{m['labels_per_video']:.2f}"] for name, m in th["methods"].items()])
    lines += ["## Table 3. Ensemble", ""] + fusion_rows(s) + stage_times(s)
    return "\n".join(lines)


@register_layout("stanford")
def stanford(s: dict[str, Any]) -> str:
    """2D vs 3D: top-1 / top-5 / mAP, per-class comparison, confused pairs, per-clip localisation."""
    keys = (("test", "top1"), ("test", "top5"), ("test", "class_map"))
    lines = header(s) + ["## Table 1. 2D frames averaged vs 3D clips", ""]
    lines += table(["modality", "model", "test-time clips", "classifier", "top-1", "top-5", "mAP"],
                   _model_rows(s, keys, with_views=True))
    res = s["results"]
    pc = res.get("analysis_per_class")
    if pc:
        a, b = pc["labels"]["a"], pc["labels"]["b"]
        shown = pc["classes"][:5] + [c for c in pc["classes"][-5:] if c not in pc["classes"][:5]]
        lines += [f"## Table 2. Per-class test AP: {b} vs {a} ({b} better on {pc['b_better']} classes, "
                  f"{a} on {pc['a_better']}; the 5 largest gains each way)", ""]
        lines += table(["class", "family", a, b, "difference"],
                       [[c["class"], c["family"], pct(c["a"]), pct(c["b"]), f"{100 * c['b_minus_a']:+.1f}"]
                        for c in shown])
    cf = res.get("analysis_confusion")
    if cf:
        lines += [f"## Table 3. Most-confused class pairs of {cf['label']} (test videos whose top-1 class is the "
                  "other, wrong, class of the pair)", ""]
        lines += table(["class a", "class b", "a taken for b", "b taken for a"],
                       [[p["a"], p["b"], str(p["a_as_b"]), str(p["b_as_a"])] for p in cf["pairs"]])
    lo = res.get("analysis_localize")
    if lo:
        lines += [f"## Per-clip localisation ({lo['label']}: its classifier on each clip)", ""]
        for v in lo["videos"]:
            clips = "; ".join(f"{c['start']:.1f}-{c['end']:.1f} s: {c['top']} {100 * c['p']:.0f}%" for c in v["clips"])
            lines += [f"- `{v['id']}` (labels: {', '.join(v['labels'])}): {clips}"]
        lines.append("")
    lines += ["## Table 4. Ensemble of the two", ""] + fusion_rows(s, ("top1", "top5", "class_map")) + stage_times(s)
    return "\n".join(lines)
