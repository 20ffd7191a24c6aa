"""The repository passes ``ruff check .`` with the configuration in pyproject.toml (E501 at 120 columns included)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_is_clean() -> None:
    pytest.importorskip("ruff")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"ruff check . failed:\n{proc.stdout}{proc.stderr}"
