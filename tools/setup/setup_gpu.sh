# The GPU build of `make setup` (GPU=1), sourced by setup.sh: a CUDA toolkit assembled from PyPI's
# CUDA wheels (tools/setup/cuda.lock) in the cache, and a Caffe built with CUDA against it.
#
# GPU=auto (setup.sh's default) builds it when `nvidia-smi -L` lists a GPU; GPU=1 builds it on any
# machine (nvcc cross-compiles: no GPU and no NVIDIA driver are needed to build); GPU=0 never.
# The GPU build is a cache entry of its own (caffe-<version>-cuda<CUDA_VERSION>-<hash>), next to
# the CPU one, and has the CPU build's options and patches plus cmake_options_gpu.txt and
# patches/gpu/ (changes that only CUDA code needs): the CPU build's cache key does not change.
# shellcheck source=cuda.lock
source "$HERE/cuda.lock"

# Prints 1 or 0: the build GPU (1, 0 or auto) asks for.
resolve_gpu() {
  case "${1:-auto}" in
    0|1) echo "$1" ;;
    auto)
      if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
        echo 1
      else
        echo 0
      fi ;;
    *) fail "gpu" "GPU=$1: use GPU=1 (CUDA build), GPU=0 (CPU build) or GPU=auto" ;;
  esac
}

# The toolkit's cache entry: the wheels and the way they are put together.
cuda_toolkit_key() {
  local sum
  sum=$(cat "$HERE/cuda.lock" "$HERE/cuda_toolkit.py" | sha256sum | cut -c1-12)
  echo "cuda-$CUDA_VERSION-$sum"
}

# A pip for `pip download`: the system's, else one in a throwaway venv (python3-venv brings it).
pip_command() {
  local work=$1
  if "$SYS_PYTHON" -m pip --version >/dev/null 2>&1; then
    echo "$SYS_PYTHON -m pip"
  else
    "$SYS_PYTHON" -m venv "$work/pip-venv" >/dev/null 2>&1 \
      || fail "cuda-wheels" "'$SYS_PYTHON -m venv' failed: no pip to download the CUDA wheels"
    echo "$work/pip-venv/bin/python -m pip"
  fi
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Downloads the wheels of cuda.lock that $CACHE_ROOT/cuda-wheels lacks (pip checks the hashes),
# then checks every file against the lock once more.
fetch_cuda_wheels() {
  local work=$1 log=$2 wheels=$CACHE_ROOT/cuda-wheels entry pin file sha need=()
  mkdir -p "$wheels"
  for entry in "${CUDA_WHEELS[@]}"; do
    read -r pin file sha <<<"$entry"
    if [ -f "$wheels/$file" ] && [ "$(sha256_of "$wheels/$file")" = "$sha" ]; then continue; fi
    rm -f "$wheels/$file"
    need+=("$pin --hash=sha256:$sha")
  done
  if [ ${#need[@]} -gt 0 ]; then
    printf '%s\n' "${need[@]}" >"$work/cuda-requirements.txt"
    local pip; read -r -a pip <<<"$(pip_command "$work")"
    run_logged "cuda-wheels (pip download, ${#need[@]} wheels)" "$log" "${pip[@]}" download \
      --no-deps --only-binary=:all: --require-hashes --disable-pip-version-check --no-input \
      -d "$wheels" -r "$work/cuda-requirements.txt"
  fi
  for entry in "${CUDA_WHEELS[@]}"; do
    read -r pin file sha <<<"$entry"
    [ -f "$wheels/$file" ] || fail "cuda-wheels" "pip did not fetch $file for $pin (log: $log)"
    [ "$(sha256_of "$wheels/$file")" = "$sha" ] \
      || fail "cuda-checksum" "$file has SHA-256 $(sha256_of "$wheels/$file"), expected $sha"
  done
}

# Prints the toolkit root, assembling it first if need be (caller holds the cache lock).
ensure_cuda_toolkit() {
  local key; key=$(cuda_toolkit_key)
  local dest=$CACHE_ROOT/$key
  if [ -x "$dest/bin/nvcc" ]; then echo "$dest"; return; fi
  rm -rf "$CACHE_ROOT"/.gpu-build-cuda-*  # left by an interrupted assembly (we hold the lock)
  local work; work=$(mktemp -d "$CACHE_ROOT/.gpu-build-$key.XXXXXX")
  trap 'rm -rf "'"$work"'"' EXIT
  local log=$CACHE_ROOT/logs/$key.log
  : >"$log"
  info "CUDA: assembling toolkit $key from PyPI's wheels (log: $log)" >&2
  fetch_cuda_wheels "$work" "$log"
  local files=() entry pin file sha
  for entry in "${CUDA_WHEELS[@]}"; do
    read -r pin file sha <<<"$entry"
    files+=("$CACHE_ROOT/cuda-wheels/$file")
  done
  run_logged "cuda-toolkit (unpack the wheels)" "$log" "$SYS_PYTHON" "$HERE/cuda_toolkit.py" \
    "$work/root" "${files[@]}"
  run_logged "cuda-toolkit (nvcc --version)" "$log" "$work/root/bin/nvcc" --version
  mv "$work/root" "$dest"  # in place only when complete
  rm -rf "$work"
  info "CUDA: toolkit in $dest ($(du -sh "$dest" | cut -f1))" >&2
  echo "$dest"
}

# Sets what build_caffe builds for the GPU: patches, option files, extra options, key, time, and
# staging names that the CPU build's clean-up (.build-*) leaves alone.
configure_gpu_build() {
  local toolkit=$1
  CAFFE_PATCHES+=("$HERE"/patches/gpu/*.patch)
  CAFFE_OPTION_FILES+=("$HERE/cmake_options_gpu.txt")
  CAFFE_KEY_FILES+=("$HERE/cuda.lock" "$HERE/cuda_toolkit.py")
  CAFFE_KEY_TAG="cuda$CUDA_VERSION-"
  CAFFE_CMAKE_EXTRA=("-DCUDA_TOOLKIT_ROOT_DIR=$toolkit")
  CAFFE_BUILD_TIME="CUDA for 5 architectures: about 11 min on 2 cores"
  CAFFE_STAGING=.gpu-build-
}
