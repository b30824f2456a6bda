#!/usr/bin/env bash
# Reproduce the pipeline: bootstrap .venv, then `dvc repro "$@"` and `dvc metrics show`.
#   bash scripts/repro.sh [dvc repro args...]  e.g. bash scripts/repro.sh --force
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"

# Stage commands / subprocesses (python, papermill, dvc, eat) must resolve to .venv.
export VIRTUAL_ENV="$ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"

export DVC_NO_ANALYTICS=1  # also off in .dvc/config (core.analytics = false)

echo "[repro] dvc repro $*"
.venv/bin/dvc repro "$@"

echo "[repro] dvc metrics show"
.venv/bin/dvc metrics show
