# MinkowskiEngine 0.5.4 built for CUDA, sourced by scripts/setup.sh (docs/GPU.md).
#
# The caller sets VENV, PIP (array), CACHE, ME_VERSION and log(). `me_cuda_wheel_dir` prints the
# cache folder of the wheel (keyed by ME version, torch, CUDA release, arch list and the patches),
# `me_cuda_build DIR` builds the wheel into it. Settings (environment):
#   BIFUSION_NVCC        auto (default): a system toolkit whose nvcc matches torch's CUDA major,
#                        else the registry's; `registry` or `system` force one.
#   BIFUSION_CUDA_ARCHS  TORCH_CUDA_ARCH_LIST of the build (default below).
#   MAX_JOBS             parallel nvcc jobs (default: cores, at most one per 4 GiB of free memory).

# The architectures torch 2.13 (cu130) itself ships: 7.5 Turing, 8.0 A100, 8.6 RTX 30xx/A10 (its code
# also runs on 8.7/8.9: Ada RTX 40xx/L4/L40S), 9.0 H100/H200, 10.0 B200 (and 10.3), 12.0 RTX 50xx
# (and 12.1), plus PTX for what comes after. CUDA 13 builds nothing older than 7.5.
ME_CUDA_ARCHS_DEFAULT="7.5 8.0 8.6 9.0 10.0 12.0+PTX"
ME_PATCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/me-patches"

_me_py() { "$VENV/bin/python" "$@"; }

# torch's CUDA release ("13.0"); empty for a CPU build of torch.
me_torch_cuda() { _me_py -c "import torch; print(torch.version.cuda or '')" 2>/dev/null; }

_nvcc_release() { "$1" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p'; }

# A system toolkit root with bin/nvcc and include/cuda_runtime.h whose CUDA major is torch's.
me_cuda_system_home() {
  local major=${1%%.*} nvcc root
  local roots=("${CUDA_HOME:-}" "${CUDA_PATH:-}")
  if nvcc=$(command -v nvcc 2>/dev/null); then
    roots+=("$(dirname "$(dirname "$(readlink -f "$nvcc")")")")
  fi
  roots+=("/usr/local/cuda-$1" /usr/local/cuda)
  for root in "${roots[@]}"; do
    [ -n "$root" ] && [ -x "$root/bin/nvcc" ] && [ -f "$root/include/cuda_runtime.h" ] || continue
    [ "$(_nvcc_release "$root/bin/nvcc" | cut -d. -f1)" = "$major" ] || continue
    echo "$root"
    return 0
  done
  return 1
}

# nvcc, ptxas, CCCL (thrust/CUB) and the runtime headers from the registry, the versions torch's own
# cuda-toolkit pins, then a CUDA_HOME of links over the venv's nvidia/cuXX folder: torch's extension
# builder wants lib64/ and the unversioned libcudart.so / libcusparse.so the wheels do not ship.
me_cuda_registry_home() {
  local cuda=$1 tk spec root home f base
  tk=$(_me_py -c "import importlib.metadata as m; print(m.version('cuda-toolkit'))" 2>/dev/null || true)
  if [ -n "$tk" ]; then spec="cuda-toolkit[nvcc,cccl]==$tk"; else spec="cuda-toolkit[nvcc,cccl]==$cuda.*"; fi
  log "installing nvcc and CCCL from the registry into $VENV ($spec)" >&2
  "${PIP[@]}" install -q "$spec" >&2 || return 1
  root=$(_me_py -c "import nvidia, os; print(next(os.path.join(p, 'cu${cuda%%.*}') for p in nvidia.__path__ if os.path.isdir(os.path.join(p, 'cu${cuda%%.*}'))))") || return 1
  [ -x "$root/bin/nvcc" ] || { echo "no nvcc in $root" >&2; return 1; }
  home="$VENV/cuda-registry"
  rm -rf "$home"
  mkdir -p "$home/lib64"
  for f in bin include nvvm; do ln -s "$root/$f" "$home/$f"; done
  for f in "$root"/lib/*; do ln -s "$f" "$home/lib64/"; done
  for f in "$root"/lib/lib*.so.*; do
    base=$(basename "$f")
    [ -e "$home/lib64/${base%%.so.*}.so" ] || ln -s "$f" "$home/lib64/${base%%.so.*}.so"
  done
  echo "$home"
}

# Prints the toolkit root to build with (and says which) or fails with the reason.
me_cuda_home() {
  local cuda=$1 choice=${BIFUSION_NVCC:-auto} home
  if [ "$choice" != registry ] && home=$(me_cuda_system_home "$cuda"); then
    log "using the system CUDA toolkit $home (nvcc $(_nvcc_release "$home/bin/nvcc"))" >&2
    echo "$home"
    return 0
  fi
  if [ "$choice" = system ]; then
    echo "BIFUSION_NVCC=system: no CUDA $cuda toolkit found (CUDA_HOME, nvcc on PATH, /usr/local/cuda)" >&2
    return 1
  fi
  me_cuda_registry_home "$cuda"
}

me_cuda_patch_hash() { cat "$ME_PATCH_DIR"/*.patch | sha256sum | cut -c1-8; }

# e.g. me-0.5.4-cuda13.0-torch2.13.0-sm75.80.86.89.90.100.120ptx-p1a2b3c4d
me_cuda_wheel_dir() {
  local cuda=$1 torch archs
  torch=$(_me_py -c "import torch; print(torch.__version__.split('+')[0])")
  archs=$(echo "${BIFUSION_CUDA_ARCHS:-$ME_CUDA_ARCHS_DEFAULT}" | tr ';' ' ' | sed 's/+PTX/ptx/g; s/\.//g' | xargs | tr ' ' '.')
  echo "$CACHE/me-$ME_VERSION-cuda$cuda-torch$torch-sm$archs-p$(me_cuda_patch_hash)"
}

# Builds the patched sdist into DIR/*.whl.
me_cuda_build() {
  local out=$1 cuda home work src jobs mem_jobs p start
  cuda=$(me_torch_cuda)
  [ -n "$cuda" ] || { echo "torch in $VENV is a CPU build: no CUDA MinkowskiEngine for it" >&2; return 1; }
  home=$(me_cuda_home "$cuda") || return 1
  work=$(mktemp -d "${TMPDIR:-/tmp}/bifusion-me-cuda.XXXXXX")
  # pip runs the unpatched setup.py for metadata, which `pip uninstall`s MinkowskiEngine with the first
  # pip on PATH: let that be this venv's (its MinkowskiEngine is replaced below anyway)
  PATH="$VENV/bin:$PATH" "${PIP[@]}" download -q --no-deps --no-binary :all: --no-build-isolation \
    -d "$work" "MinkowskiEngine==$ME_VERSION" || return 1
  tar xzf "$work"/MinkowskiEngine-"$ME_VERSION".tar.gz --no-same-owner -C "$work" || return 1
  src="$work/MinkowskiEngine-$ME_VERSION"
  for p in "$ME_PATCH_DIR"/*.patch; do
    patch -s -p1 -d "$src" < "$p" || { echo "patch $(basename "$p") does not apply" >&2; return 1; }
  done
  jobs=$(nproc)
  mem_jobs=$(( $(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 4194304 ))
  [ "$mem_jobs" -lt "$jobs" ] && jobs=$(( mem_jobs > 0 ? mem_jobs : 1 ))
  log "building MinkowskiEngine $ME_VERSION for CUDA $cuda (archs ${BIFUSION_CUDA_ARCHS:-$ME_CUDA_ARCHS_DEFAULT}," \
    "$(ls "$ME_PATCH_DIR"/*.patch | wc -l) patches, ${MAX_JOBS:-$jobs} jobs; docs/GPU.md has build times) into $out; log: $out.log"
  start=$(date +%s)
  mkdir -p "$out.tmp"
  # rpath: the extension finds libcusparse/libcudart in the venv's nvidia/cuXX/lib without LD_LIBRARY_PATH
  if ! CUDA_HOME="$home" TORCH_CUDA_ARCH_LIST="${BIFUSION_CUDA_ARCHS:-$ME_CUDA_ARCHS_DEFAULT}" \
    MAX_JOBS=${MAX_JOBS:-$jobs} LDFLAGS="${LDFLAGS:-} -Wl,-rpath,\$ORIGIN/../nvidia/cu${cuda%%.*}/lib" \
    "${PIP[@]}" wheel -v --no-deps --no-build-isolation \
      --config-settings=--global-option=--blas=openblas --config-settings=--global-option=--force_cuda \
      -w "$out.tmp" "$src" > "$out.log" 2>&1; then
    grep -E "error|Error" "$out.log" | head -20 >&2
    echo "MinkowskiEngine CUDA build failed: $out.log (sources and objects kept in $work)" >&2
    return 1
  fi
  rm -rf "$out"; mv "$out.tmp" "$out"; mv "$out.log" "$out/build.log"
  printf 'built %s in %d s with %s (nvcc %s)\n' "$(basename "$out")" $(( $(date +%s) - start )) "$home" \
    "$(_nvcc_release "$home/bin/nvcc")" > "$out/BUILD-INFO"
  rm -rf "$work"
  log "$(cat "$out/BUILD-INFO")"
}
