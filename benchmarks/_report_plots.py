"""The PNG plots of ``REPORT.md``: throughput per stage, demo-pipeline mAP, search recall vs q/s.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend switch).
Every plot reads only the metrics it is given; one whose figures are all missing is not drawn
(and an old PNG of that name is removed, so the report never shows stale numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from benchmarks.pipeline.steps import MODALITIES

OURS, PLAIN = "#1f77b4", "#b0b0b0"
MODALITY_COLOURS = {"rgb": "#d62728", "flow": "#2ca02c", "audio": "#9467bd"}
FUSION_COLOUR = "#ff7f0e"
LOG_RANGE = 30  # a panel whose bars span more than this factor gets a log axis


@dataclass(frozen=True)
class Panel:
    """One throughput panel: bars ``(label, metric key, ours?)`` of one benchmark, one unit."""

    benchmark: str
    title: str
    unit: str
    bars: tuple[tuple[str, str, bool], ...]


THROUGHPUT: tuple[Panel, ...] = (
    Panel("store", "store: shuffled epoch", "rows/s", (
        ("Zarr + torch reader", "epoch_rows_per_s", True), (".npy per video", "npy_per_video_rows_per_s", False),
        ("np.memmap", "memmap_rows_per_s", False))),
    Panel("extract", "extract: ResNet-18 TSN", "clips/s", (
        ("decode stage", "decode_clips_per_s", False), ("model stage", "model_clips_per_s", False),
        ("pipeline", "pipeline_clips_per_s", True), ("per-video script", "naive_clips_per_s", False))),
    Panel("heads", "heads: training epoch", "videos/s", (
        ("mean_mlp", "mean_mlp_rows_per_s", True), ("netvlad", "netvlad_rows_per_s", True),
        ("nextvlad", "nextvlad_rows_per_s", True), ("nonlocal", "nonlocal_netvlad_rows_per_s", True),
        ("ResNet-18 pass", "backbone_videos_per_s", False))),
    Panel("sweep", "sweep: head configurations", "configs/min", (
        ("one after another", "serial_configs_per_min", False), ("Dask, 2 workers", "sweep_configs_per_min", True))),
    Panel("search", "search: held-out queries", "queries/s", (
        ("auto index", "auto_qps", True), ("exact Flat", "exact_qps", False), ("numpy", "numpy_qps", False))),
)


def _value(metrics: Mapping[str, Any], key: str) -> float | None:
    v = metrics.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        return None
    return float(v)


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def _short(v: float) -> str:
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.3g}"


def throughput_plot(results: Mapping[str, Mapping[str, Any]], path: Path) -> Path | None:
    """One bar panel per benchmark in :data:`THROUGHPUT` that has figures; None if none has."""
    panels = []
    for p in THROUGHPUT:
        m = results.get(p.benchmark) or {}
        bars = [(label, v, ours) for label, key, ours in p.bars if (v := _value(m, key)) is not None]
        if bars:
            panels.append((p, bars))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.6 * rows), layout="constrained")
    for i, (p, bars) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = [v for _, v, _ in bars]
        ax.bar(range(len(bars)), values, color=[OURS if o else PLAIN for _, _, o in bars])
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], rotation=25, ha="right", fontsize=8)
        if max(values) / min(values) > LOG_RANGE:
            ax.set_yscale("log")
        for x, v in enumerate(values):
            ax.annotate(_short(v), (x, v), ha="center", va="bottom", fontsize=8)
        ax.set_title(p.title, fontsize=10)
        ax.set_ylabel(p.unit + (" (log)" if ax.get_yscale() == "log" else ""))
        ax.margins(y=0.15)
    fig.suptitle("ours (blue) vs the plain alternatives (grey)", fontsize=10)
    return _save(fig, path)


def pipeline_heads(metrics: Mapping[str, Any]) -> list[str]:
    """Heads named by ``<modality>_<head>_{val,test}_map`` keys: the backbone's own first, kNN last."""
    heads = {k[len(mod) + 1:-len(suffix)] for k in metrics for mod in MODALITIES for suffix in ("_val_map", "_test_map")
             if k.startswith(mod + "_") and k.endswith(suffix)}
    return sorted(heads, key=lambda h: (h != "backbone", h == "knn", h))


def pipeline_map_entries(metrics: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """``(group, label, test class mAP)``: each modality's heads (kNN last), then each fusion."""
    out = [(mod, head, v) for mod in MODALITIES for head in pipeline_heads(metrics)
           if (v := _value(metrics, f"{mod}_{head}_test_map")) is not None]
    out += [("fusion", k[len("fusion_"):-len("_test_map")], v) for k in metrics
            if k.startswith("fusion_") and k.endswith("_test_map") and (v := _value(metrics, k)) is not None]
    return out


def pipeline_map_plot(metrics: Mapping[str, Any], path: Path) -> Path | None:
    """Horizontal bars of test class mAP per modality x head and per fusion method."""
    entries = pipeline_map_entries(metrics)
    if not entries:
        return None
    fig = Figure(figsize=(7, 0.32 * len(entries) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(entries)))[::-1]
    ax.barh(y, [100 * v for _, _, v in entries],
            color=[MODALITY_COLOURS.get(g, FUSION_COLOUR) for g, _, _ in entries])
    ax.set_yticks(y, [f"{g}: {label}" for g, label, _ in entries], fontsize=8)
    for yi, (_, _, v) in zip(y, entries, strict=True):
        ax.annotate(f"{100 * v:.1f}", (100 * v, yi), xytext=(3, 0), textcoords="offset points", va="center",
                    fontsize=8)
    best = _value(metrics, "best_single_test_map")
    if best is not None:
        which = metrics.get("best_single_input")
        ax.axvline(100 * best, color="k", ls="--", lw=1,
                   label=f"best fusion input{f' ({which})' if isinstance(which, str) else ''} {100 * best:.1f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("test class mAP (%)")
    ax.set_xlim(0, 100 * max(v for _, _, v in entries) * 1.15)
    ax.set_title("demo pipeline: heads per modality, kNN, fusion", fontsize=10)
    return _save(fig, path)


def recall_qps_plot(metrics: Mapping[str, Any], path: Path, recall_target: float | None = None) -> Path | None:
    """The auto index's recall@10 against q/s as nprobe grows (log x), with exact and numpy points."""
    curve = [metrics.get(k) for k in ("curve_nprobe", "curve_recall10", "curve_qps")]
    points = [(p, r, q) for p, r, q in zip(*curve, strict=False) if q and q > 0] if all(
        isinstance(c, list) for c in curve) else []
    singles = [(label, _value(metrics, q), r if isinstance(r, float) else _value(metrics, r), marker)
               for label, q, r, marker in (("exact Flat", "exact_qps", 1.0, "s"),
                                           ("numpy brute force", "numpy_qps", "numpy_recall10", "D"),
                                           ("auto index (tuned)", "auto_qps", "auto_recall10", "*"))]
    singles = [s for s in singles if s[1] is not None and s[2] is not None]
    if not points and not singles:
        return None
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    if points:
        ax.plot([q for _, _, q in points], [r for _, r, _ in points], "o-", color=OURS, label="IVF, nprobe sweep")
        for p, r, q in points:
            ax.annotate(f"{p:g}", (q, r), xytext=(4, -10), textcoords="offset points", fontsize=7)
    for label, q, r, marker in singles:
        ax.plot([q], [r], marker, ms=11 if marker == "*" else 8, ls="none", label=label,
                color=FUSION_COLOUR if marker == "*" else "k" if marker == "s" else PLAIN, mec="k")
    if recall_target is not None:
        ax.axhline(recall_target, color="k", ls=":", lw=1, label=f"target recall@10 {recall_target:g}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("queries/s (log)")
    ax.set_ylabel("recall@10")
    ax.set_title("search: recall@10 vs queries/s (labels: nprobe)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def draw_all(metrics: Mapping[str, Mapping[str, Any]], directory: Path,
             recall_target: float | None = None) -> dict[str, Path]:
    """Draw every plot that has figures into ``directory``; ``{name: path}`` of those drawn."""
    directory.mkdir(parents=True, exist_ok=True)
    jobs = {"throughput": lambda p: throughput_plot(metrics, p),
            "pipeline_map": lambda p: pipeline_map_plot(metrics.get("pipeline") or {}, p),
            "search_recall_qps": lambda p: recall_qps_plot(metrics.get("search") or {}, p, recall_target)}
    drawn = {}
    for name, draw in jobs.items():
        path = directory / f"{name}.png"
        if draw(path) is not None:
            drawn[name] = path
        else:
            path.unlink(missing_ok=True)
    return drawn
