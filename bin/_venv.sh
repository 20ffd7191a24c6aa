# Sourced by bin/demo and bin/test: make sure .venv exists and holds this project, installed from
# requirements.lock (every package pinned; bin/lock refreshes it). Re-installs when the lock or
# pyproject.toml changes: the stamp file is named after a hash of both.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
LOCK="$ROOT/requirements.lock"
STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" "$LOCK" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating the virtual environment in $VENV (first run: several minutes)" >&2
        "$PY" -m venv "$VENV"
        "$VENV/bin/pip" install -q --upgrade pip
    fi
    "$VENV/bin/pip" install -q -r "$LOCK"
    "$VENV/bin/pip" install -q --no-deps -e "$ROOT"  # the project itself; its dependencies come from the lock
    rm -f "$VENV"/.installed-*
    touch "$STAMP"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT"
