#!/usr/bin/env bash
# Lint and test: bootstrap .venv, then `ruff check .` and `pytest "$@"` from the repo root.
#   bash scripts/test.sh [pytest args...]      e.g. bash scripts/test.sh -m "not slow"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"

# Stage commands / subprocesses (python, papermill, dvc, eat) must resolve to .venv.
export VIRTUAL_ENV="$ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"

echo "[test] ruff check ."
.venv/bin/ruff check .

echo "[test] pytest $*"
exec .venv/bin/python -m pytest "$@"
