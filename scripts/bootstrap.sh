#!/usr/bin/env bash
# Idempotent set-up of the project's virtualenv (.venv, Python 3.11).
#
#   bash scripts/bootstrap.sh
#
# - creates .venv with python3.11 (or python3 when that is 3.11; override with EAT_PYTHON=...)
# - runs `pip install -e .[dev]` only when pyproject.toml changed since the last successful
#   install: the sha256 of pyproject.toml is kept in .venv/.eat-installed
# - upgrades nothing else (pip/setuptools in .venv are left as they are)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.eat-installed"

say() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; }

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d' ' -f1
    else
        "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
    fi
}

[[ -f pyproject.toml ]] || die "no pyproject.toml in $ROOT"

# --- 1. the virtualenv -------------------------------------------------------------------
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'pass' >/dev/null 2>&1; then
    is_py311 "$VENV/bin/python" \
        || die ".venv uses $("$VENV/bin/python" --version 2>&1), not Python 3.11; remove it (rm -rf .venv) and rerun"
else
    PY=""
    if [[ -n "${EAT_PYTHON:-}" ]]; then
        is_py311 "$EAT_PYTHON" || die "EAT_PYTHON=$EAT_PYTHON is not a working Python 3.11"
        PY="$EAT_PYTHON"
    elif command -v python3.11 >/dev/null 2>&1 && is_py311 python3.11; then
        PY="python3.11"
    elif command -v python3 >/dev/null 2>&1 && is_py311 python3; then
        PY="python3"
    else
        found="$(python3 --version 2>&1 || echo 'no python3')"
        die "Python 3.11 is required (requires-python = \">=3.11,<3.12\"): no python3.11 on PATH and python3 is '$found'. Install Python 3.11 or set EAT_PYTHON=/path/to/python3.11"
    fi
    say "creating .venv with $("$PY" --version 2>&1) ($(command -v "$PY"))"
    "$PY" -m venv "$VENV"
    rm -f "$STAMP"
fi

# --- 2. the package ----------------------------------------------------------------------
want="$(sha256_of pyproject.toml)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" == "$have" ]] && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("eat")' >/dev/null 2>&1; then
    say ".venv up to date (pyproject.toml unchanged), skipping pip"
    exit 0
fi

say "installing -e .[dev] into .venv (first run downloads/installs torch etc.: a few minutes)"
rm -f "$STAMP"
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$VENV/bin/python" -m pip install --quiet --editable ".[dev]"
printf '%s\n' "$want" > "$STAMP.tmp" && mv "$STAMP.tmp" "$STAMP"
say "done ($("$VENV/bin/python" --version 2>&1), stamp $STAMP)"
