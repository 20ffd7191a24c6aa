"""Markdown pieces shared by the pipeline summary, the recipe tables and REPORT.md."""

from __future__ import annotations


def pct(v: float | None) -> str:
    """A fraction as a percentage with one decimal; ``-`` when missing."""
    return "-" if v is None else f"{100 * v:.1f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table as lines (``|`` inside a cell escaped)."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)]
