#!/usr/bin/env bash
# The quick pipeline: every stage end to end on the quick parameter set (params.quick.yaml
# merged into params.yaml), in a scratch copy of this checkout, in a few minutes.
#   bash scripts/quick.sh [DIR]      DIR: where the copy goes (default: .quick, git-ignored)
# The copy is a git repository of its own, so `dvc repro`, `dvc metrics show` and
# `dvc exp run` work there exactly as here; this checkout's outputs are left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
DEST="$(realpath -m "${1:-.quick}")"

export VIRTUAL_ENV="$ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export DVC_NO_ANALYTICS=1

echo "[quick] copying the working tree to $DEST"
rm -rf "$DEST"
mkdir -p "$DEST"
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' name; do
    [[ -f "$name" ]] || continue
    mkdir -p "$DEST/$(dirname "$name")"
    cp -p "$name" "$DEST/$name"
done
python - "$ROOT/params.yaml" "$ROOT/params.quick.yaml" "$DEST/params.yaml" <<'PY'
import sys
import yaml
from eat.params import load_params_with_overrides

merged = load_params_with_overrides(sys.argv[1], sys.argv[2])
with open(sys.argv[3], "w") as handle:
    handle.write("# params.yaml with params.quick.yaml merged in (scripts/quick.sh)\n")
    yaml.safe_dump(merged, handle, sort_keys=False)
PY

cd "$DEST"
# The copy's own eat package, ahead of the one .venv installed from this checkout.
export PYTHONPATH="$DEST"
git init -q -b main
git -c user.name=eat -c user.email=eat@localhost add -A
git -c user.name=eat -c user.email=eat@localhost commit -qm "quick pipeline"
start=$SECONDS
echo "[quick] dvc repro in $DEST"
dvc repro
echo "[quick] done in $((SECONDS - start)) s; summary (dvc metrics show in $DEST for all)"
python -m eat summary
