#!/usr/bin/env bash
# The GPU check (docs/GPU.md), for a machine with an NVIDIA driver and GPU: installs bifusion with
# MinkowskiEngine built for CUDA (the cached wheel in ~/.cache/bifusion/wheels when its key matches,
# else it builds it), then scripts/gpu_check.py runs the CUDA path (ME kernels against the CPU, every
# preset's forward/backward, bf16 autocast, a training run, the online path, DDP over NCCL with 2
# GPUs) and bench/suite.py --device cuda for P1, P3 and P6: one table, ~10 min on one GPU.
# GPU_CHECK_ARGS go to gpu_check.py (e.g. "--skip-bench", "--presets demo 3d-sv").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BIFUSION_VENV:-.venv}
OUT=${GPU_CHECK_OUT:-outputs/gpu_check}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "[gpu-check] no NVIDIA driver or GPU here (nvidia-smi): nothing to check" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/[gpu-check] /'
BIFUSION_ME_BUILD=cuda bash scripts/setup.sh
mkdir -p "$OUT"
set -o pipefail
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of arguments
PYTHONUNBUFFERED=1 "$VENV/bin/python" scripts/gpu_check.py --out "$OUT" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$OUT/gpu_check.log"
