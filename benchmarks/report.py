"""``REPORT.md``: every benchmark's figures beside its baselines, the targets, the machine, plots.

:func:`write_report` renders the saved result records of ``python -m benchmarks.run`` (one
``<workdir>/results/<name>.json`` per benchmark)::

    {"benchmark": "store", "description": "...", "date": "2025-01-31T12:00:00+00:00",
     "command": "python -m benchmarks.run ...", "machine": "CPU: ...; cores: 2; ...",
     "gpu": null, "seconds": 41.2, "metrics": {"epoch_rows_per_s": 153000.0, ...},
     "last_failure": {"date": ..., "error": ...}}          # only when the latest try crashed

What each benchmark's table shows is declared in :data:`SECTIONS`: rows of "ours vs the
plain alternative" naming metric keys, how to compare them (ratio, speedup, mAP points) and
the target from the benchmark's docstring. A key missing from a record prints ``-``; keys no
row names are listed under "other figures". Plots come from :mod:`benchmarks._report_plots`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import _report_plots as plots
from benchmarks._markdown import table
from benchmarks._report_sections import OPS, SEARCH_RECALL_TARGET, SECTIONS, Row, Section
from benchmarks.pipeline.steps import MODALITIES


# ------------------------------------------------------------------------------------ numbers
def number(metrics: Mapping[str, Any], key: str | None) -> float | None:
    """``metrics[key]`` as a finite float, or None (missing, not a number, NaN)."""
    v = metrics.get(key) if key else None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def fmt(v: Any, percent: bool = False) -> str:
    """A figure for a table: ``-`` when missing; 3 significant digits or thousands separators."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "-"
    if not math.isfinite(v):
        return "nan" if math.isnan(v) else str(v)
    if percent:
        return f"{100 * v:.1f}"
    if float(v).is_integer() and abs(v) < 1e15:
        return f"{int(v):,}"
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3g}"


def with_derived(name: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics plus the section's derived figures (those whose inputs are present)."""
    out = dict(metrics)
    for key, fn in SECTIONS[name].derived if name in SECTIONS else ():
        try:
            out.setdefault(key, float(fn(out)))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            pass
    return out


def compare(row: Row, metrics: Mapping[str, Any]) -> float | None:
    ours, base = number(metrics, row.ours), number(metrics, row.baseline)
    if ours is None or base is None or row.compare == "none":
        return None
    if row.compare == "points":
        return 100 * (ours - base)
    num, den = (ours, base) if row.compare == "ratio" else (base, ours)
    return num / den if den else None


def _fmt_comparison(row: Row, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:+.1f} pts" if row.compare == "points" else f"{fmt(v)}x"


def _fmt_target(row: Row) -> str:
    t = row.target
    if t is None:
        return ""
    if t.on == "ours":
        bound = fmt(t.value, row.percent) + (" %" if row.percent else f" {row.unit}".rstrip())
    else:
        bound = f"{t.value:+g} pts" if row.compare == "points" else f"{t.value:g}x"
    return f"{t.op} {bound}" + (f" (on {t.device.upper()})" if t.device else "")


def check_targets(name: str, record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(verdict, line)`` per target of a benchmark: verdict ``met``, ``MISSED``, ``not measured``
    or ``not applicable`` (a GPU target on a CPU run and the reverse)."""
    metrics = with_derived(name, record.get("metrics") or {})
    device = "gpu" if record.get("gpu") else "cpu"
    out = []
    for row in SECTIONS[name].rows if name in SECTIONS else ():
        t = row.target
        if t is None:
            continue
        what = row.label + (f" vs {row.baseline_label}" if t.on == "comparison" else "")
        value = number(metrics, row.ours) if t.on == "ours" else compare(row, metrics)
        shown = fmt(value, row.percent) + (" %" if row.percent else "") if t.on == "ours" else \
            _fmt_comparison(row, value)
        if t.device and t.device != device:
            out.append(("not applicable", f"{what}: {shown} (target {_fmt_target(row)}; this run had "
                                          f"{'a GPU' if device == 'gpu' else 'no GPU'})"))
        elif value is None:
            out.append(("not measured", f"{what} (target {_fmt_target(row)})"))
        else:
            out.append(("met" if OPS[t.op](value, t.value) else "MISSED",
                        f"{what}: {shown} (target {_fmt_target(row)})"))
    return out


# ------------------------------------------------------------------------------------ Markdown
def _section_table(section: Section, metrics: Mapping[str, Any]) -> list[str]:
    rows = []
    for r in section.rows:
        unit = "%" if r.percent and not r.unit else r.unit
        rows.append([r.label + (f" ({unit})" if unit else ""), fmt(metrics.get(r.ours), r.percent),
                     r.baseline_label or "", fmt(metrics.get(r.baseline), r.percent) if r.baseline else "",
                     _fmt_comparison(r, compare(r, metrics)) if r.baseline and r.compare != "none" else "",
                     _fmt_target(r)])
    return table(["measure", "ours", "plain alternative", "its figure", "ours vs it", "target"], rows)


def _pipeline_extra(m: Mapping[str, Any]) -> tuple[list[str], set[str]]:
    """Class mAP per modality x head (val and test) and the seconds each stage took."""
    used, rows = set(), []
    for mod in MODALITIES:
        for h in plots.pipeline_heads(m):
            val, test = f"{mod}_{h}_val_map", f"{mod}_{h}_test_map"
            if val in m or test in m:
                used |= {val, test}
                label = "backbone's own classifier (training)" if h == "backbone" else h
                rows.append([mod, label, fmt(m.get(val), True), fmt(m.get(test), True)])
    lines = ["", "Class mAP (%) per modality and head:", "", *table(["modality", "head", "val", "test"], rows)]
    stages = [k for k in m if k.startswith("stage_") and k.endswith("_s")]
    used |= set(stages)
    lines += ["", "Seconds per stage (when computed; a rerun reuses cached stages):", "",
              *table(["stage", "s"], [[k[len("stage_"):-2], fmt(m[k])] for k in stages])]
    return (lines if rows or stages else []), used


def _search_extra(m: Mapping[str, Any]) -> tuple[list[str], set[str]]:
    keys = ("curve_nprobe", "curve_recall10", "curve_qps")
    curve = [m.get(k) for k in keys]
    if not all(isinstance(c, list) for c in curve) or not curve[0]:
        return [], set()
    rows = [[fmt(p), fmt(r), fmt(q)] for p, r, q in zip(*curve, strict=False)]
    return ["", "Recall@10 against queries/s as nprobe grows (the auto index tunes it to the smallest value "
                f"reaching recall@10 {SEARCH_RECALL_TARGET} on indexed vectors):", "",
            *table(["nprobe", "recall@10", "q/s"], rows)], set(keys)


EXTRAS: dict[str, Callable[[Mapping[str, Any]], tuple[list[str], set[str]]]] = {
    "pipeline": _pipeline_extra, "search": _search_extra}


def _other_figures(metrics: Mapping[str, Any], used: set[str]) -> list[str]:
    rows = []
    for k, v in metrics.items():
        if k in used:
            continue
        if isinstance(v, list):
            v = ", ".join(fmt(x) for x in v[:12]) + (", ..." if len(v) > 12 else "")
        rows.append([f"`{k}`", fmt(v)])
    return ["", "Other figures:", "", *table(["metric", "value"], rows)] if rows else []


def _benchmark_section(name: str, record: Mapping[str, Any], machine: str) -> list[str]:
    section = SECTIONS.get(name)
    raw = record.get("metrics") or {}
    metrics = with_derived(name, raw)
    lines = [f'<a id="{name}"></a>', "", f"## {name}: {section.title if section else record.get('description') or ''}",
             ""]
    if record.get("date"):
        run = f"Measured {record['date']}"
        if isinstance(record.get("seconds"), (int, float)):
            run += f" in {record['seconds']:.0f} s"
        lines.append(run + f" by `{record.get('command') or '?'}`.")
    else:
        lines.append("No completed run saved.")
    if record.get("machine") and record["machine"] != machine:
        lines += ["", f"Machine of that run: {record['machine']}."]
    failure = record.get("last_failure")
    if failure:
        lines += ["", f"**The latest try ({failure.get('date', '?')}) failed**: `{failure.get('error', '?')}`"
                      + ("; the figures below are from the run before it." if raw else "; no figures saved.")]
    used: set[str] = set()
    if section:
        lines += ["", *_section_table(section, metrics)]
        used = {k for r in section.rows for k in (r.ours, r.baseline) if k} | {k for k, _ in section.derived}
    if name in EXTRAS:
        extra, more = EXTRAS[name](metrics)
        lines += extra
        used |= more
    verdicts = check_targets(name, record)
    if verdicts:
        lines += ["", "Targets:", "", *(f"- **{v}**: {line}" for v, line in verdicts)]
    return lines + _other_figures(raw, used) + [""]


def demote_headings(markdown: str, levels: int = 2) -> str:
    """Headings pushed ``levels`` deeper (at most ``######``), fenced code left alone."""
    out, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            hashes = len(line) - len(line.lstrip("#"))
            line = "#" * min(6, hashes + levels) + line[hashes:]
        out.append(line)
    return "\n".join(out)


# ------------------------------------------------------------------------------------ the report
def write_report(results: Mapping[str, Mapping[str, Any]], out: Path, *, machine: str,
                 recipes: Mapping[str, str], command: str = "python -m benchmarks.run") -> Path:
    """Write the Markdown report and its PNG plots (into ``out.parent / "report"``).

    Args:
        results: Benchmark name -> saved result record (see the module docstring).
        out: The Markdown file to write (``benchmarks/REPORT.md``).
        machine: The machine the report describes (``benchmarks.run.describe_machine``); a result
            measured on another one says so in its section.
        recipes: Recipe name -> its ``RESULT.md``; each becomes a section, headings demoted.
        command: The command that produced the report.

    Returns:
        ``out``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metrics = {name: with_derived(name, rec.get("metrics") or {}) for name, rec in results.items()}
    drawn = plots.draw_all(metrics, out.parent / "report", recall_target=SEARCH_RECALL_TARGET)
    order = [n for n in SECTIONS if n in results] + sorted(n for n in results if n not in SECTIONS)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    lines = ["# Benchmark report", "",
             f"Written {now} by `{command}` from the saved results of each benchmark "
             "(`<workdir>/results/<name>.json`, each with its own date and command); "
             "`python -m benchmarks.run --report-only` rebuilds it from them. Every benchmark compares our "
             "path with the plain alternative in the same run.", "", "## Machine", "",
             *(f"- {part}" for part in machine.split("; ")), "", "## Summary", ""]
    rows = []
    for name in order:
        verdicts = [v for v, _ in check_targets(name, results[name]) if v in ("met", "MISSED")]
        seconds = results[name].get("seconds")
        rows.append([f"[{name}](#{name})", results[name].get("description") or "", results[name].get("date") or "-",
                     fmt(round(seconds)) if isinstance(seconds, (int, float)) else "-",
                     (f"{verdicts.count('met')} / {len(verdicts)} met" if verdicts else "-")
                     + (" (latest try failed)" if results[name].get("last_failure") else "")])
    lines += table(["benchmark", "what it compares", "date", "s", "targets"], rows)
    missing = [n for n in SECTIONS if n not in results]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)} (`python -m benchmarks.run --only NAME`)."]
    captions = {"throughput": "Throughput, ours vs the plain alternatives",
                "pipeline_map": "Demo pipeline: test class mAP per modality, head and fusion",
                "search_recall_qps": "Search: recall@10 vs queries/s"}
    if drawn:
        lines += ["", "## Plots", ""]
        for key, path in drawn.items():
            rel = Path(os.path.relpath(path, out.parent)).as_posix()
            lines += [f"### {captions.get(key, key)}", "", f"![{captions.get(key, key)}]({rel})", ""]
    lines.append("")
    for name in order:
        lines += _benchmark_section(name, results[name], machine)
    for name, text in sorted(recipes.items()):
        lines += [f"## Recipe: {name}", "", demote_headings(text.strip(), 2), ""]
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return out
