"""Analyses a recipe's report asks for beyond mAP tables: ``[analyses.NAME]`` in a recipe file.

- ``thresholds``: per-class decision thresholds (Li et al. 2017) fitted on a ranking-loss head's
  out-of-fold train logits, vs the fixed 0.5 cut and the top-k classes (k: a train video's mean
  label count) (RippleAI/SNU's "LSEP with thresholds"). The fit minimises BCE of ``s - theta``:
  where no score makes a label more likely than not, the threshold rises above all scores.
- ``per_class``: per-class test AP of two runs side by side (Stanford's 2D vs 3D comparison).
- ``confusion``: the most-confused class pairs of a run on the test rows.
- ``localize``: per-clip class scores of a backbone's own classifier (``<set>__logits``) for a
  few test videos, with the clips' times: where in the video each label is seen.

Each is ``fn(ctx, settings) -> JSON-able dict``, registered by name; run references may be a
run name or ``best:SET`` (the best head on SET by val class mAP).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.pipeline.steps import PipelineError

Analysis = Callable[[Any, dict[str, Any]], dict[str, Any]]
_ANALYSES: dict[str, Analysis] = {}


def register_analysis(name: str) -> Callable[[Analysis], Analysis]:
    def deco(fn: Analysis) -> Analysis:
        if name in _ANALYSES:
            raise ValueError(f"analysis {name!r} is registered twice")
        _ANALYSES[name] = fn
        return fn
    return deco


def get_analysis(name: str) -> Analysis:
    if name not in _ANALYSES:
        raise KeyError(f"unknown analysis {name!r}; choose from {list_analyses()}")
    return _ANALYSES[name]


def list_analyses() -> list[str]:
    return sorted(_ANALYSES)


def best_run(ctx: Any, features: str) -> str:
    """The head run on ``features`` with the best val class mAP."""
    scored = [(r["scores"]["val"]["class_map"], r["run"]) for r in ctx.results["heads"]["runs"]
              if r["features"] == features and r["status"] == "ok" and (r["scores"] or {}).get("val")]
    if not scored:
        raise PipelineError(f"[fusion] best:{features}: no head run on {features} has a val class mAP")
    return max(scored)[1]


def _resolve(ctx: Any, ref: str) -> str:
    return best_run(ctx, ref.split(":", 1)[1]) if ref.startswith("best:") else ref


def _test(ctx: Any, run: str) -> tuple[np.ndarray, np.ndarray, Any]:
    """A run's scores and the labels on the test rows, and the store."""
    fs = ctx.open()
    scores, _ = fs.read_predictions(run)
    rows = fs.split_rows("test")
    return scores[rows], fs.labels()[rows], fs


@register_analysis("thresholds")
def thresholds(ctx: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Fit per-class thresholds on the out-of-fold train scores of the best head with ``loss``."""
    from heads.thresholds import decision_metrics, fit_thresholds

    loss = settings.get("loss", "lsep")
    runs = [r for r in ctx.results["heads"]["runs"] if r["loss"] == loss and r["status"] == "ok"
            and (r["scores"] or {}).get("val") and r["folds"]]
    if not runs:
        raise ValueError(f"[analyses.thresholds]: no head run with loss {loss!r} and folds to fit thresholds on")
    best = max(runs, key=lambda r: r["scores"]["val"]["class_map"])
    fs = ctx.open()
    probs, _ = fs.read_predictions(best["run"])
    scores = np.log(np.clip(probs, 1e-7, 1 - 1e-7) / np.clip(1 - probs, 1e-7, 1))  # back to the head's logits
    labels = fs.labels()
    train, test = fs.split_rows("train"), fs.split_rows("test")
    out: dict[str, Any] = {"run": best["run"], "features": best["features"], "head": best["head"],
                           "fit_rows": len(train), "eval_rows": len(test), "methods": {}}
    out["methods"]["fixed 0.5"] = decision_metrics(probs[test] > 0.5, labels[test])
    k = max(1, round(float(labels[train].sum(1).mean())))  # the mean label count of a train video
    top = np.zeros(probs[test].shape, bool)
    np.put_along_axis(top, np.argsort(-probs[test], axis=1)[:, :k], True, axis=1)
    out["methods"][f"top-{k}"] = decision_metrics(top, labels[test])
    for mode in settings.get("modes", ["per_class"]):
        model = fit_thresholds(scores[train], labels[train], mode=mode, seed=ctx.recipe.demo.seed)
        out["methods"][f"learned ({mode})"] = decision_metrics(model.predict(scores[test]), labels[test])
    out["true_labels_per_video"] = float(labels[test].sum(1).mean()) if len(test) else None
    return out


@register_analysis("per_class")
def per_class(ctx: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Test AP per class of runs ``a`` and ``b``; the classes each wins most."""
    from heads.metrics import class_map

    names = {k: _resolve(ctx, settings[k]) for k in ("a", "b")}
    ap = {}
    for k, run in names.items():
        scores, labels, fs = _test(ctx, run)
        ap[k] = class_map(scores, labels).per_class
    classes = fs.classes
    diff = ap["b"] - ap["a"]
    rows = [{"class": classes[c], "family": ctx.results["demo"]["families"][classes[c]],
             "a": float(ap["a"][c]), "b": float(ap["b"][c]), "b_minus_a": float(diff[c])}
            for c in np.argsort(-np.nan_to_num(diff, nan=0.0)) if np.isfinite(diff[c])]
    return {"a": names["a"], "b": names["b"], "labels": {k: settings.get(f"{k}_label", names[k]) for k in names},
            "classes": rows, "b_better": int((diff > 0).sum()), "a_better": int((diff < 0).sum())}


@register_analysis("confusion")
def confusion(ctx: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The ``top`` most-confused class pairs of a run's top-1 prediction on the test rows."""
    from heads.localize import confusion_matrix, most_confused

    run = _resolve(ctx, settings["run"])
    scores, labels, fs = _test(ctx, run)
    pairs = most_confused(confusion_matrix(scores, labels), top=int(settings.get("top", 6)))
    return {"run": run, "label": settings.get("label", run),
            "pairs": [{"a": fs.classes[a], "b": fs.classes[b], "a_as_b": ab, "b_as_a": ba} for a, b, ab, ba in pairs]}


@register_analysis("localize")
def localize(ctx: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """Per-clip top class (sigmoid of the backbone's clip logits) for the first ``videos`` test videos."""
    set_name = settings["set"]
    fs = ctx.open()
    logits = fs.feature_set(f"{set_name}__logits")
    rows = fs.split_rows("test")[: int(settings.get("videos", 3))]
    data, valid = logits.read(rows)
    times = fs.feature_set(set_name).read_times(rows)
    labels, ids = fs.labels()[rows], fs.videos(["id"])["id"].to_numpy()[rows]
    videos = []
    for i, row in enumerate(rows):
        probs = 1 / (1 + np.exp(-data[i]))  # (K, C) per-clip class probabilities
        clips = [{"start": float(times[i, k, 0]), "end": float(times[i, k, 1]),
                  "top": fs.classes[int(probs[k].argmax())], "p": float(probs[k].max())}
                 for k in np.flatnonzero(valid[i])]
        videos.append({"row": int(row), "id": str(ids[i]), "labels": [fs.classes[c] for c in np.flatnonzero(labels[i])],
                       "clips": clips})
    return {"set": set_name, "label": settings.get("label", set_name), "videos": videos}
