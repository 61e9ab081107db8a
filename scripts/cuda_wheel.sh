#!/usr/bin/env bash
# `make cuda-wheel`: the CUDA build of MinkowskiEngine proven on a machine without a GPU (docs/GPU.md).
# Runs scripts/setup.sh with the CUDA build forced into a separate venv (never .venv): torch from the
# registry, nvcc + CCCL from the registry (BIFUSION_NVCC=registry unless set), the patches of
# scripts/me-patches, the wheel cached in ~/.cache/bifusion/wheels. Then, in that venv: import
# MinkowskiEngine, compare its CPU results with .venv's CPU build (scripts/me_parity.py) and run the
# test suite on CPU tensors. Everything runs under nice; a one-time check, not part of `make test`.
# Settings: BIFUSION_CUDA_VENV (default ~/.cache/bifusion/venv-cuda), BIFUSION_CUDA_ARCHS, MAX_JOBS,
# BIFUSION_NVCC (registry, system or auto), PYTEST_ARGS (shell-quoted; default: -q tests).
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_VENV=${BIFUSION_CUDA_VENV:-$HOME/.cache/bifusion/venv-cuda}
export BIFUSION_NVCC=${BIFUSION_NVCC:-registry}
log() { printf '[cuda-wheel] %s\n' "$*"; }

case "$(cd "$(dirname "$CUDA_VENV")" 2>/dev/null && pwd)/$(basename "$CUDA_VENV")" in
  "$(pwd)/.venv") log "BIFUSION_CUDA_VENV must not be the project's .venv"; exit 2 ;;
esac

start=$(date +%s)
BIFUSION_VENV="$CUDA_VENV" BIFUSION_ME_BUILD=cuda nice -n 19 bash scripts/setup.sh
log "setup of $CUDA_VENV took $(( $(date +%s) - start )) s"
VENV=$CUDA_VENV CACHE=${BIFUSION_WHEEL_CACHE:-$HOME/.cache/bifusion/wheels}
ME_VERSION=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('MinkowskiEngine'))")
source scripts/me_cuda.sh
WHEEL_DIR=$(me_cuda_wheel_dir "$(me_torch_cuda)")
log "wheel: $(ls "$WHEEL_DIR"/*.whl) ($(du -h "$WHEEL_DIR"/*.whl | cut -f1)); $(cat "$WHEEL_DIR/BUILD-INFO" 2>/dev/null || echo 'no BUILD-INFO')"

"$CUDA_VENV/bin/python" -W ignore - <<'EOF'
import bifusion_core.compat as c
ME = c.import_minkowski()
from MinkowskiEngineBackend import _C
print(f"[cuda-wheel] import MinkowskiEngine {ME.__version__}: built with CUDA {ME.is_cuda_available()}, "
      f"CUDA {ME.cuda_version()}, cudart {ME.cudart_version()}, {_C.__file__}")
assert ME.is_cuda_available(), "the installed MinkowskiEngine is not the CUDA build"
EOF

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -x .venv/bin/python ]; then
  nice -n 19 .venv/bin/python -W ignore scripts/me_parity.py --save "$tmp/cpu-build.pt"
  nice -n 19 "$CUDA_VENV/bin/python" -W ignore scripts/me_parity.py --save "$tmp/cuda-build.pt"
  log "MinkowskiEngine on CPU tensors, CPU build (.venv) vs CUDA build ($CUDA_VENV):"
  "$CUDA_VENV/bin/python" scripts/me_parity.py --compare "$tmp/cpu-build.pt" "$tmp/cuda-build.pt"
else
  log "no .venv (make setup): the CPU-build comparison is skipped"
fi

log "test suite on CPU tensors with the CUDA build: $CUDA_VENV/bin/python -m pytest ${PYTEST_ARGS:--q tests}"
eval "set -- ${PYTEST_ARGS:--q tests}"  # shell-quoted, e.g. PYTEST_ARGS="-q -m 'not slow' tests"
nice -n 19 "$CUDA_VENV/bin/python" -m pytest "$@"
log "done in $(( ($(date +%s) - start) / 60 )) min"
