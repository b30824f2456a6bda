#!/usr/bin/env bash
# Profile this machine's GPU with the real SD 1.x / SDXL architectures (the profile stage,
# params.yaml `profile`, device auto -> cuda) and compare it with the shipped H200
# reference; writes docs/gpu_profile_comparison.md and docs/gpu_profile/*.png.
#
#   bash benchmarks/profile_gpu.sh prepare   # on a machine with PyPI: wheels -> .whl/
#   bash benchmarks/profile_gpu.sh run       # on the GPU machine (a few minutes on an H100)
#   bash benchmarks/profile_gpu.sh smoke DIR # the same steps on this CPU, tiny models (a
#                                            # check of the script; outputs under DIR)
#
# `prepare` fetches the pure-Python / cp312 wheels that a bare GPU image with PyTorch
# usually lacks (diffusers, pydantic, ...) into .whl/ (git-ignored through
# .git/info/exclude); `run` installs them into /tmp/site when .whl/ exists, so the GPU
# machine needs no network (.whl/ is ignored by git: have the device tool carry it,
# carry: [".whl"]). Everything `run` writes also lands in $OUT when that is set (the
# device tool brings it back; copy it into docs/ and commit): the report, its two
# figures, profile.csv/json and the stage summary. Budget: a few minutes of profiling
# (real SD 1.x and SDXL, eager and CUDA graphs, the reference grid) plus imports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
MODE="${1:-run}"
PY="${PYTHON:-python3}"
# what a bare PyTorch image lacks; versions as pinned in pyproject.toml (pip check clean)
WHEELS=(
    diffusers==0.42.1
    importlib_metadata==10.2.0
    zipp==4.1.2
    pydantic==2.14.4
    pydantic_core==2.50.5
    annotated-types==0.8.0
    typing-inspection==0.4.5
    typing-extensions==4.16.0
)

case "$MODE" in
prepare)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
    mkdir -p .whl
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    ls -l .whl
    ;;
run | smoke)
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site:$ROOT"
    else
        export PYTHONPATH="$ROOT"
    fi
    export PYTHONUNBUFFERED=1
    if [[ "$MODE" == run ]]; then
        "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
        WORK="artifacts/gpu_profile"
        DOCS="docs"
    else
        [[ -n "${2:-}" ]] || { echo "usage: $0 smoke DIR" >&2; exit 2; }
        WORK="$2/work"
        DOCS="$2/docs"
    fi
    # the profile stage (params.yaml `profile`, device auto), its outputs under $WORK
    "$PY" -m eat --params params.yaml --root "$WORK" profile >/dev/null
    "$PY" benchmarks/compare_profile.py "$WORK/reports/profile/profile.csv" \
        --metadata "$WORK/artifacts/profile/profile.json" \
        --out "$DOCS/gpu_profile_comparison.md" --figures "$DOCS/gpu_profile"
    if [[ -n "${OUT:-}" ]]; then
        cp "$DOCS/gpu_profile_comparison.md" "$WORK/reports/profile/profile.csv" \
            "$WORK/artifacts/profile/profile.json" "$WORK/reports/profile_summary.json" "$OUT/"
        mkdir -p "$OUT/gpu_profile" && cp "$DOCS"/gpu_profile/*.png "$OUT/gpu_profile/"
    fi
    ;;
*)
    echo "usage: $0 prepare|run|smoke DIR" >&2
    exit 2
    ;;
esac
