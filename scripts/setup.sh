#!/usr/bin/env bash
# Idempotent environment setup for bifusion: .venv with the registry's torch build,
# MinkowskiEngine built once into a wheel cache, and the package in editable mode.
# MinkowskiEngine is built for the CPU, or for CUDA where torch sees a GPU (docs/GPU.md):
# BIFUSION_ME_BUILD=auto|cpu|cuda chooses; scripts/me_cuda.sh holds the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${BIFUSION_PYTHON:-python3.11}
VENV=${BIFUSION_VENV:-.venv}
CACHE=${BIFUSION_WHEEL_CACHE:-$HOME/.cache/bifusion/wheels}
TORCH_SPEC="torch==2.13.0 torchvision==0.28.0"
ME_VERSION=0.5.4
STAMP="$VENV/.bifusion-setup"
export BIFUSION_ME_BUILD=${BIFUSION_ME_BUILD:-auto}
# --isolated: ignore the machine's pip config/env, which points at a CPU-only torch wheel
# that cannot be paired with the registry's torchvision.
PIP=("$VENV/bin/python" -m pip --isolated --disable-pip-version-check)

log() { printf '[setup] %s\n' "$*"; }

hash_inputs() { cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16; }

# MinkowskiEngine imports, and has CUDA where the build wanted is cuda (auto: where torch sees a GPU).
ME_OK="import os, sys, torch, collections, collections.abc as a
[setattr(collections, n, getattr(a, n)) for n in a.__all__ if not hasattr(collections, n)]
import MinkowskiEngine as ME
want = os.environ['BIFUSION_ME_BUILD']
sys.exit(0 if ME.is_cuda_available() or want == 'cpu' or (want == 'auto' and not torch.cuda.is_available()) else 1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(hash_inputs)" ] \
   && "$VENV/bin/python" -W ignore -c "import open_clip, bifusion_core.compat as c; c.import_minkowski()
$ME_OK" 2>/dev/null; then
  log "environment up to date ($VENV)"
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
"${PIP[@]}" install -q --upgrade "pip>=24" wheel "numpy<2.3" ninja

if ! "$VENV/bin/python" -c "import torch, torchvision, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') and '+cpu' not in torch.__version__ else 1)" 2>/dev/null; then
  log "installing $TORCH_SPEC from the registry (CUDA build, ~4.8 GB, a few minutes the first time)"
  "${PIP[@]}" install -q $TORCH_SPEC
fi

if ! "$VENV/bin/python" -W ignore -c "$ME_OK" 2>/dev/null; then
  if ! ls /usr/lib/x86_64-linux-gnu/libopenblas.so >/dev/null 2>&1 && ! ls /usr/lib/*/libopenblas.so >/dev/null 2>&1; then
    log "installing libopenblas-dev"
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get install -y -q libopenblas-dev >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q libopenblas-dev >/dev/null; }
  fi
  mkdir -p "$CACHE"
  TAG=$BIFUSION_ME_BUILD
  if [ "$TAG" = auto ]; then
    TAG=cpu
    if "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then TAG=cuda; fi
  fi
  if [ "$TAG" = cuda ]; then
    source scripts/me_cuda.sh
    CUDA_RELEASE=$(me_torch_cuda)
    [ -n "$CUDA_RELEASE" ] || { log "torch in $VENV is a CPU build: no CUDA MinkowskiEngine for it"; exit 1; }
    WHEEL_DIR=$(me_cuda_wheel_dir "$CUDA_RELEASE")
  else
    WHEEL_DIR="$CACHE/me-$ME_VERSION-cpu-torch2.13.0"
  fi
  if ! ls "$WHEEL_DIR"/*.whl >/dev/null 2>&1; then
    "${PIP[@]}" install -q "setuptools<75"  # the setuptools its setup.py was tested with
    if [ "$TAG" = cuda ]; then
      me_cuda_build "$WHEEL_DIR"
    else
      log "building MinkowskiEngine $ME_VERSION ($TAG) into $WHEEL_DIR (~8 min on 2 cores, once)"
      mkdir -p "$WHEEL_DIR.tmp"
      ARGS=(--config-settings=--global-option=--blas=openblas --config-settings=--global-option=--cpu_only)
      MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel -q --no-deps --no-build-isolation "${ARGS[@]}" \
        -w "$WHEEL_DIR.tmp" "MinkowskiEngine==$ME_VERSION"
      rm -rf "$WHEEL_DIR"; mv "$WHEEL_DIR.tmp" "$WHEEL_DIR"
    fi
  fi
  log "installing MinkowskiEngine from $WHEEL_DIR"
  "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL_DIR"/*.whl
fi

# torch wants a newer setuptools than the one MinkowskiEngine's setup.py was built with above.
"${PIP[@]}" install -q "setuptools>=77"

if [ -f pyproject.toml ]; then
  log "installing bifusion (editable) and its dependencies"
  # quiet unless it fails: the editable build prints setuptools warnings nobody can act on
  "${PIP[@]}" install -q -e ".[test]" > "$VENV/setup-pip.log" 2>&1 || { cat "$VENV/setup-pip.log"; exit 1; }
  hash_inputs > "$STAMP"
fi
log "done"
