#!/usr/bin/env bash
# `make setup`: Debian packages, a Caffe built once into a cache (CPU-only, or with CUDA), and .venv.
#
# Idempotent: a second run checks and returns in seconds. Every step that fails says which step
# and why in one line (with the path of its log where there is one) and exits non-zero.
#
# Environment:
#   MEDSR_CACHE   cache root for the Caffe build (default ~/.cache/medsr-caffe)
#   CAFFE_ROOT    an existing Caffe to use instead of building one (needs python/ and a caffe binary)
#   JOBS          parallel compile jobs (default: nproc)
#   GPU           1: Caffe with CUDA (setup_gpu.sh), 0: CPU-only, auto (default): 1 when nvidia-smi
#                 lists a GPU
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tools/setup
SYS_PYTHON=/usr/bin/python3
CACHE_ROOT=${MEDSR_CACHE:-$HOME/.cache/medsr-caffe}
VENV=$ROOT/.venv
JOBS=${JOBS:-$(nproc)}
# shellcheck source=caffe.lock
source "$HERE/caffe.lock"

fail() { echo "setup: step '$1' failed: $2" >&2; exit 1; }
info() { echo "setup: $*"; }

# Run a command with its output in a log; on failure, one line naming the step and the log.
run_logged() {
  local step=$1 log=$2; shift 2
  if ! "$@" >>"$log" 2>&1; then
    fail "$step" "'$*' exited non-zero (log: $log)"
  fi
}

strip_comments() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$1"; }

# ---- step 1: Debian packages --------------------------------------------------------------
install_debian_packages() {
  local wanted missing=()
  mapfile -t wanted < <(strip_comments "$HERE/debian_packages.txt")
  for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && { info "Debian packages: all ${#wanted[@]} present"; return; }
  [ "$(id -u)" -eq 0 ] || fail "debian-packages" "missing ${missing[*]}; run 'make setup' as root or install them"
  info "Debian packages: installing ${missing[*]}"
  mkdir -p "$CACHE_ROOT/logs"
  local log=$CACHE_ROOT/logs/apt-install.log
  : >"$log"
  run_logged "debian-packages (apt-get update)" "$log" apt-get update -q
  run_logged "debian-packages (apt-get install)" "$log" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---- step 2: Caffe --------------------------------------------------------------------------
# What build_caffe builds: the CPU build; configure_gpu_build (setup_gpu.sh) adds to it for GPU=1.
CAFFE_PATCHES=("$HERE"/patches/*.patch)
CAFFE_OPTION_FILES=("$HERE/cmake_options.txt")
CAFFE_KEY_FILES=()
CAFFE_KEY_TAG=""
CAFFE_CMAKE_EXTRA=()
CAFFE_BUILD_TIME="3-4 min on 2 cores"
CAFFE_STAGING=.build-  # prefix of the temporary build directories in the cache
# shellcheck source=setup_gpu.sh
source "$HERE/setup_gpu.sh"

# The cache key covers everything that changes the build: source version, patches, CMake options.
cache_key() {
  local sum
  sum=$(cat "$HERE/caffe.lock" "${CAFFE_OPTION_FILES[@]}" "${CAFFE_PATCHES[@]}" "${CAFFE_KEY_FILES[@]}" \
        | sha256sum | cut -c1-12)
  echo "caffe-${CAFFE_DEB_VERSION//[^A-Za-z0-9.]/_}-$CAFFE_KEY_TAG$sum"
}

# Prints "PYTHONDIR BINARY" of a Caffe the user already has, or nothing.
existing_caffe() {
  if [ -n "${CAFFE_ROOT:-}" ]; then
    local bin
    for bin in "$CAFFE_ROOT/build/tools/caffe" "$CAFFE_ROOT/bin/caffe" "$CAFFE_ROOT/tools/caffe"; do
      [ -x "$bin" ] && [ -d "$CAFFE_ROOT/python/caffe" ] && { echo "$CAFFE_ROOT/python $bin"; return; }
    done
    fail "caffe" "CAFFE_ROOT=$CAFFE_ROOT has no python/caffe and build/tools/caffe"
  fi
  local pydir
  if pydir=$(cd / && "$SYS_PYTHON" -c 'import caffe, os; print(os.path.dirname(os.path.dirname(caffe.__file__)))' 2>/dev/null); then
    local bin; bin=$(command -v caffe || true)
    [ -n "$bin" ] && echo "$pydir $bin"
  fi
}

# Private apt configuration built from the machine's own mirror: the system's is not touched.
fetch_caffe_source() {
  local work=$1 log=$2 mirror keyring
  read -r mirror keyring < <("$SYS_PYTHON" "$HERE/debian_mirror.py" 2>>"$log") \
    || fail "caffe-source" "no Debian mirror in /etc/apt/sources.list{,.d} (log: $log)"
  local apt=$work/apt signed=""
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$work/src"
  [ "$keyring" != "-" ] && signed="[signed-by=$keyring] "
  echo "deb-src ${signed}${mirror} ${CAFFE_DEB_SUITE} main" >"$apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o "APT::Sandbox::User=root")
  run_logged "caffe-source (apt-get update, suite $CAFFE_DEB_SUITE)" "$log" apt-get "${opts[@]}" update
  (cd "$work/src" && apt-get "${opts[@]}" source --download-only \
      "$CAFFE_DEB_PACKAGE=$CAFFE_DEB_VERSION") >>"$log" 2>&1 \
    || fail "caffe-source" "apt-get source $CAFFE_DEB_PACKAGE=$CAFFE_DEB_VERSION failed (log: $log)"
  verify_sha256 "$work/src/$CAFFE_ORIG_TARBALL" "$CAFFE_ORIG_SHA256"
  verify_sha256 "$work/src/$CAFFE_DEBIAN_TARBALL" "$CAFFE_DEBIAN_SHA256"
}

verify_sha256() {
  local file=$1 want=$2 got
  [ -f "$file" ] || fail "caffe-checksum" "$file was not downloaded"
  got=$(sha256sum "$file" | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "caffe-checksum" "$(basename "$file") has SHA-256 $got, expected $want"
}

# Debian's own patches (dpkg-source), then the project's.
unpack_and_patch() {
  local work=$1 log=$2 dsc
  dsc=$(ls "$work"/src/*.dsc)
  run_logged "caffe-unpack (dpkg-source -x)" "$log" dpkg-source --no-check -x "$dsc" "$work/caffe"
  local p
  for p in "${CAFFE_PATCHES[@]}"; do
    (cd "$work/caffe" && patch -p1 --forward --batch <"$p") >>"$log" 2>&1 \
      || fail "caffe-patch" "${p#"$HERE"/patches/} does not apply (log: $log)"
  done
}

build_caffe() {
  local key=$1 dest=$CACHE_ROOT/$1
  rm -rf "$CACHE_ROOT/$CAFFE_STAGING"*  # left by an interrupted build (we hold the lock)
  local work; work=$(mktemp -d "$CACHE_ROOT/$CAFFE_STAGING$key.XXXXXX")
  trap 'rm -rf "'"$work"'"' EXIT
  local log=$CACHE_ROOT/logs/$key.log
  : >"$log"
  info "Caffe: building $key ($CAFFE_BUILD_TIME; log: $log)"
  fetch_caffe_source "$work" "$log"
  unpack_and_patch "$work" "$log"
  local opts=() file
  for file in "${CAFFE_OPTION_FILES[@]}"; do mapfile -t -O "${#opts[@]}" opts < <(strip_comments "$file"); done
  mkdir -p "$work/build"
  run_logged "caffe-configure (cmake)" "$log" cmake -S "$work/caffe" -B "$work/build" "${opts[@]}" \
    "${CAFFE_CMAKE_EXTRA[@]}" "-DCMAKE_INSTALL_PREFIX=$dest"
  run_logged "caffe-build (make)" "$log" make -C "$work/build" -j"$JOBS" all
  # Install under a staging root, then rename into place: a failed build leaves no cache entry.
  run_logged "caffe-install" "$log" make -C "$work/build" install DESTDIR="$work/stage"
  mv "$work/stage$dest" "$dest"
  rm -rf "$work"
  info "Caffe: installed into $dest"
}

# Prints "PYTHONDIR BINARY" of the Caffe to use, building it first if need be.
ensure_caffe() {
  local found; found=$(existing_caffe)
  if [ -n "$found" ]; then echo "$found"; return; fi
  mkdir -p "$CACHE_ROOT/logs"
  if [ "$USE_GPU" = 1 ]; then
    # Its own lock and staging names (setup_gpu.sh): a CPU setup never waits for a GPU build.
    exec 9>"$CACHE_ROOT/.lock-gpu"
    flock 9
    local toolkit; toolkit=$(ensure_cuda_toolkit) || exit 1
    configure_gpu_build "$toolkit"
  else
    exec 9>"$CACHE_ROOT/.lock"
    flock 9  # two concurrent `make setup` runs build once
  fi
  local key; key=$(cache_key)
  local dest=$CACHE_ROOT/$key
  [ -x "$dest/bin/caffe" ] || build_caffe "$key" >&2
  echo "$dest/lib/python3/dist-packages $dest/bin/caffe"
}

# ---- step 3: .venv ------------------------------------------------------------------------
ensure_venv() {
  local pydir=$1 bin=$2
  if [ ! -x "$VENV/bin/python" ] || ! grep -q "include-system-site-packages = true" "$VENV/pyvenv.cfg" 2>/dev/null \
     || [ "$(readlink -f "$VENV/bin/python")" != "$(readlink -f "$SYS_PYTHON")" ]; then
    rm -rf "$VENV"
    "$SYS_PYTHON" -m venv --system-site-packages "$VENV" \
      || fail "venv" "'$SYS_PYTHON -m venv --system-site-packages $VENV' failed"
  fi
  local site; site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  # libgomp's threads (our direct convolution's, patch 0002) spin-wait after each parallel region
  # and take the cores from OpenBLAS's threads: every Python of this venv defaults to PASSIVE.
  # OpenBLAS's own idle threads yield in a loop for 2^28 cycles after each threaded call (the
  # loss's, every step) and take the cores from our OpenMP threads, which shows in the mean step:
  # they sleep after 2^4 (tools/setup/README.md; measured in docs/notebook/2026-12-06-performance.md).
  printf '%s\n%s\n' "$pydir" 'import os; os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE"); os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")' \
    >"$site/medsr_caffe.pth"
  echo "$ROOT" >"$site/medsr_caffe_repo.pth"
  rm -f "$VENV/bin/caffe"  # an older setup made a symlink: never write through it into the cache
  printf '#!/bin/sh\n# Caffe'"'"'s tool, with libgomp and OpenBLAS threads that do not spin (tools/setup/setup.sh)\n%s\n%s\n%s\n' \
    ': "${OMP_WAIT_POLICY:=PASSIVE}"; export OMP_WAIT_POLICY' \
    ': "${OPENBLAS_THREAD_TIMEOUT:=4}"; export OPENBLAS_THREAD_TIMEOUT' "exec \"$bin\" \"\$@\"" >"$VENV/bin/caffe"
  chmod +x "$VENV/bin/caffe"
  (cd / && "$VENV/bin/python" -c 'import caffe') 2>"$CACHE_ROOT/logs/import-caffe.log" \
    || fail "venv" "'import caffe' fails in $VENV (log: $CACHE_ROOT/logs/import-caffe.log)"
  info "venv: $VENV (pycaffe from $pydir, caffe binary $bin)"
}

# ---- step 4: PyPI packages (tools/setup/requirements.txt, pinned) -------------------------------
# Installed into .venv with --no-deps: each package is pinned in the file, nothing else comes along,
# and Debian's numpy (pycaffe's ABI) stays. Skipped in well under a second when all are there.
ensure_python_packages() {
  local req=$HERE/requirements.txt log=$CACHE_ROOT/logs/pip-install.log missing
  missing=$("$VENV/bin/python" - "$req" <<'PY'
import re, sys
from importlib import metadata
wanted = [line.split("#")[0].strip() for line in open(sys.argv[1])]
for pin in filter(None, wanted):
    name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s]+)", pin).groups()
    try:
        ok = metadata.version(name) == version
    except metadata.PackageNotFoundError:
        ok = False
    if not ok:
        print(pin)
PY
  ) || fail "python-packages" "cannot read $req"
  if [ -z "$missing" ]; then
    info "PyPI packages: all pinned in $(basename "$req") present"
    return
  fi
  info "PyPI packages: installing $(echo $missing)"
  : >"$log"
  run_logged "python-packages (pip install -r $req)" "$log" "$VENV/bin/python" -m pip install \
    --no-deps --disable-pip-version-check --no-input -r "$req"
}

main() {
  USE_GPU=$(resolve_gpu "${GPU:-auto}") || exit 1
  case "${GPU:-auto}/$USE_GPU" in
    1/1) info "GPU=1: Caffe with CUDA $CUDA_VERSION (GPU=0 for the CPU-only build)" ;;
    auto/1) info "nvidia-smi lists a GPU: Caffe with CUDA $CUDA_VERSION (GPU=0 for the CPU-only build)" ;;
  esac
  install_debian_packages
  [ -x "$SYS_PYTHON" ] || fail "python" "$SYS_PYTHON not found"
  mkdir -p "$CACHE_ROOT/logs"
  local caffe pydir bin
  caffe=$(ensure_caffe) || exit 1
  read -r pydir bin <<<"$caffe"
  ensure_venv "$pydir" "$bin"
  ensure_python_packages
  info "done"
}

main "$@"
