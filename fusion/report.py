"""The fusion report: ``report.md`` with its PNG plots.

Sections: set-up (inputs, their availability, fit/eval rows); overall metrics of every
input and method (class mAP, sample mAP, GAP@20, top-1, top-5) with a bar plot; per-class AP
gain of the main method over the best single input (bar plot, sorted); which input each
class relies on (a table and a heatmap, like the per-modality tables of the Alibaba and
Qiniu Moments-in-Time reports); what each method learned (weights, rounds, gains).
Plots use matplotlib's object API on the Agg canvas, so no global backend is changed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fusion.pipeline import METRIC_NAMES, FusionResult

log = logging.getLogger(__name__)

HEADERS = {"class_map": "class mAP", "sample_map": "sample mAP", "gap20": "GAP@20", "top1": "top-1", "top5": "top-5"}


def _pct(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.2f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _plot_overall(result: FusionResult, path: Path) -> None:
    table = result.metrics_table()
    fig = Figure(figsize=(max(6.0, 0.9 * len(table)), 3.6))
    ax = fig.add_subplot()
    colors = ["#9aa5b1" if k == "input" else "#2a6f97" for k in table["kind"]]
    ax.bar(range(len(table)), 100 * table["class_map"], color=colors)
    ax.set_xticks(range(len(table)), table.index, rotation=30, ha="right")
    ax.set_ylabel(f"class mAP on {result.plan.eval_split} (%)")
    ax.set_title("inputs (grey) and fusion methods (blue)")
    for i, v in enumerate(100 * table["class_map"]):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    _save(fig, path)


def _plot_gain(result: FusionResult, gain: np.ndarray, path: Path) -> None:
    order = np.argsort(-np.nan_to_num(gain, nan=-np.inf))
    fig = Figure(figsize=(max(6.0, 0.16 * len(gain)), 3.6))
    ax = fig.add_subplot()
    vals = 100 * np.nan_to_num(gain[order])
    ax.bar(range(len(order)), vals, color=np.where(vals >= 0, "#2a9d8f", "#e76f51"))
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(order)), [result.classes[i] for i in order], rotation=90, fontsize=6)
    ax.set_ylabel("AP gain (points)")
    ax.set_title(f"{result.main.name} vs best single input ({result.best_input}), per class")
    _save(fig, path)


def _plot_reliance(result: FusionResult, path: Path) -> None:
    rel = result.main.reliance
    fig = Figure(figsize=(2.4 + 0.9 * len(result.inputs), max(3.0, 0.17 * len(result.classes) + 1.2)))
    ax = fig.add_subplot()
    im = ax.imshow(rel, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(result.inputs)), result.inputs, rotation=30, ha="right")
    ax.set_yticks(range(len(result.classes)), result.classes, fontsize=6)
    ax.set_title(f"reliance of {result.main.name} on each input")
    fig.colorbar(im, ax=ax, fraction=0.08, label="share of the class's output")
    _save(fig, path)


def _method_notes(result: FusionResult) -> list[str]:
    notes = []
    for m in result.methods.values():
        rec = m.record
        line = f"- **{m.name}** (fit {m.fit_seconds:.1f} s)"
        if "weights" in rec:
            w = rec["weights"]
            shown = {k: (f"{v:.3f}" if isinstance(v, float) else f"mean {np.mean(v):.3f}") for k, v in w.items()}
            line += ": weights " + ", ".join(f"{k} {v}" for k, v in shown.items())
        if "rounds" in rec:
            gains = {k: float(np.sum(v)) for k, v in rec["gain_per_input"].items()}
            total = sum(gains.values()) or 1.0
            line += (f": device {rec['device']}, {np.mean(rec['rounds']):.1f} rounds per class on average, "
                     "tree total-gain share " + ", ".join(f"{k} {100 * g / total:.0f}%" for k, g in gains.items()))
        if "coef" in rec:
            line += f": {np.shape(rec['coef'])[1]} standardised features per class"
        notes.append(line)
    return notes


def write_report(result: FusionResult, out_dir: str | Path) -> Path:
    """Write ``report.md``, ``overall.png``, ``ap_gain.png`` and ``reliance.png`` into ``out_dir``.

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    main, best = result.main, result.best_input
    plan = result.plan
    table = result.metrics_table()
    best_ap = result.input_ap[best]
    per_class_best = np.nanmax(np.stack(list(result.input_ap.values())), axis=0) if result.inputs else best_ap
    gain = main.per_class_ap - best_ap
    _plot_overall(result, out / "overall.png")
    _plot_gain(result, gain, out / "ap_gain.png")
    _plot_reliance(result, out / "reliance.png")

    fit_text = (f"`{plan.fit_split}` ({len(plan.fit_rows)} rows)" if plan.fit_split else "nothing fitted")
    md = [f"# Fusion report: {main.name}", "",
          f"- store: `{result.store}`",
          "- inputs: " + ", ".join(f"`{r}` (available on {100 * result.availability[r]:.0f}% of eval rows)"
                                    for r in result.inputs),
          f"- fitted on: {fit_text}; evaluated on: `{plan.eval_split}` ({len(plan.eval_rows)} rows)",
          f"- fused run written as: `{result.written_as}`" if result.written_as else "- fused run not written", "",
          f"## Overall metrics on `{plan.eval_split}` (%)", ""]
    rows = [[name, row["kind"], *(_pct(row[k]) for k in METRIC_NAMES),
             "" if not np.isfinite(row["fit_s"]) else f"{row['fit_s']:.1f}"] for name, row in table.iterrows()]
    md += [_md_table(["name", "kind", *(HEADERS[k] for k in METRIC_NAMES), "fit s"], rows), ""]
    summary = (f"Best single input: `{best}` ({_pct(result.input_metrics[best]['class_map'])}). "
               f"`{main.name}`: {_pct(main.metrics['class_map'])}, "
               f"{100 * (main.metrics['class_map'] - result.input_metrics[best]['class_map']):+.2f} points; "
               f"it beats the best single input on {int(np.nansum(gain > 0))} of {int(np.isfinite(gain).sum())} "
               f"classes and the best input of each class on {int(np.nansum(main.per_class_ap > per_class_best))}.")
    reliance_note = ("Reliance: the share of the class's fused output that moves with each input (mean absolute "
                     "contribution over the eval rows; for xgboost the linear base plus the trees' SHAP values, "
                     "availability columns counted with their run).")
    md += [summary, "",
           "![overall](overall.png)", "",
           f"## Per-class AP gain of `{main.name}` over `{best}`", "", "![AP gain](ap_gain.png)", "",
           f"## Per-class AP (%) and reliance of `{main.name}` on each input", "", reliance_note, ""]
    header = ["class", "pos", *(f"AP {r}" for r in result.inputs), *(f"AP {m}" for m in result.methods),
              f"gain vs {best}", *(f"rel. {r}" for r in result.inputs), "relies most on"]
    rows = []
    for c, name in enumerate(result.classes):
        rel = main.reliance[c]
        rows.append([name, str(int(result.n_positives[c])), *(_pct(result.input_ap[r][c]) for r in result.inputs),
                     *(_pct(m.per_class_ap[c]) for m in result.methods.values()),
                     "n/a" if not np.isfinite(gain[c]) else f"{100 * gain[c]:+.2f}",
                     *(f"{100 * v:.0f}%" for v in rel), result.inputs[int(np.argmax(rel))] if rel.sum() else "-"])
    md += [_md_table(header, rows), "", "![reliance](reliance.png)", "", "## Methods", "", *_method_notes(result), ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    log.info("wrote %s", path)
    return path
