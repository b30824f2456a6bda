#!/usr/bin/env bash
# Profile this machine's GPU with the real SD 1.x / SDXL architectures (the profile stage,
# params.yaml `profile`, device auto -> cuda) and compare it with the shipped H200
# reference; writes docs/gpu_profile_comparison.md and docs/gpu_profile/*.png.
#
#   bash benchmarks/profile_gpu.sh prepare   # on a machine with PyPI: wheels -> .whl/
#   bash benchmarks/profile_gpu.sh run       # on the GPU machine (a few minutes on an H100)
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
run)
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site:$ROOT"
    else
        export PYTHONPATH="$ROOT"
    fi
    export PYTHONUNBUFFERED=1
    "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device")'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
    WORK="reports/gpu_profile"
    "$PY" -m eat.profiling --params params.yaml --out "$WORK/profile" \
        --decision "$WORK/latency_source.json" --summary "$WORK/profile_summary.json"
    "$PY" benchmarks/compare_profile.py "$WORK/profile/profile.csv" \
        --metadata "$WORK/profile/profile.json" --out docs/gpu_profile_comparison.md \
        --figures docs/gpu_profile
    if [[ -n "${OUT:-}" ]]; then
        cp docs/gpu_profile_comparison.md "$WORK/profile/profile.csv" \
            "$WORK/profile/profile.json" "$WORK/profile_summary.json" "$OUT/"
        mkdir -p "$OUT/gpu_profile" && cp docs/gpu_profile/*.png "$OUT/gpu_profile/"
    fi
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
