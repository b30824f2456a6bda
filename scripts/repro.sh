#!/usr/bin/env bash
# Reproduce the pipeline: bootstrap .venv, then `dvc repro "$@"` and a summary of the metrics.
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

# `dvc metrics show` lists every metric (a very wide table); print the headline instead.
echo "[repro] summary (full metrics: reports/metrics.json, dvc metrics show)"
.venv/bin/python -m eat summary
