#!/usr/bin/env bash
# Run wbc_edge.runtime on aarch64 under qemu-user emulation and compare it with the same run on this x86 host.
#
# Usage:  benchmarks/arm/run_emulated.sh [--pytest] MODEL.tflite IMAGE_OR_FOLDER...
#         benchmarks/arm/run_emulated.sh --setup-only
#
#   Writes benchmarks/arm/results/<model-name>.json (both runs + comparison) and <model-name>.md, exits 0 when
#   the aarch64 run gives the same top-1 labels as x86 and max |dprob| is within tolerance (1 output
#   quantisation step for integer outputs, 1e-5 for float outputs), else 1.
#   --pytest  also runs tests/test_runtime.py under emulation (TF-free parts; models must be pre-made, see
#             WBC_EDGE_TEST_TFLITE_DIR in tests/test_runtime.py; made here with benchmarks/arm/make_tiny_models.py).
#
# Environment:
#   WBC_ARM_DIR      cache for the emulated root + aarch64 site-packages (default /tmp/wbc-arm); set-up is
#                    idempotent: a finished step leaves a marker and is skipped next time.
#   WBC_ARM_RESULTS  output folder (default benchmarks/arm/results)
#   WBC_HOST_PYTHON  x86 python with wbc_edge's deps + ai-edge-litert (default .venv/bin/python, else python3)
#   WBC_ARM_CPU      qemu -cpu model (default cortex-a72, a Raspberry Pi 4 core)
#
# Needs root (apt-get, unshare -m + mount --bind) and network access to the Debian mirror and PyPI for the
# first set-up.  Method and facts: ../shared/design/TOOLCHAIN.md "ARM (aarch64) under emulation".
# Emulated latency is meaningless (qemu is ~10-50x slower than a real core); only outputs are compared.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/benchmarks/arm"
ARM_DIR=${WBC_ARM_DIR:-/tmp/wbc-arm}
ROOT="$ARM_DIR/root"
SITE="$ARM_DIR/site"
CPUINFO="$ARM_DIR/cpuinfo-cortex-a72.txt"
QEMU_CPU_MODEL=${WBC_ARM_CPU:-cortex-a72}
RESULTS=${WBC_ARM_RESULTS:-$HERE/results}
HOST_PY=${WBC_HOST_PYTHON:-$REPO/.venv/bin/python}
[ -x "$HOST_PY" ] || HOST_PY=$(command -v python3)
PY_VER=3.11

# The arm64 debs that make a working python3.11 (bookworm names; see TOOLCHAIN.md).
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libssl3 libstdc++6 libgcc-s1 zlib1g
      libffi8 libexpat1 libsqlite3-0 libbz2-1.0 liblzma5 libzstd1 libncursesw6 libtinfo6 libreadline8 libuuid1
      libcrypt1 libtirpc3 libnsl2 libdb5.3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
      libkeyutils1 gcc-12-base)

log() { printf '[run_emulated] %s\n' "$*" >&2; }
die() { printf '[run_emulated] error: %s\n' "$*" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

PYTEST=0
SETUP_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pytest) PYTEST=1; shift ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
if [ "$SETUP_ONLY" = 0 ] && [ $# -lt 2 ]; then usage; fi
[ "$(id -u)" = 0 ] || die "needs root (apt-get, unshare -m, mount --bind); run with sudo"

mkdir -p "$ARM_DIR"
exec 9>"$ARM_DIR/.lock"
flock 9   # one set-up at a time

# --- 1. qemu-user-static -------------------------------------------------------------------------------
ensure_qemu() {
  if command -v qemu-aarch64-static >/dev/null; then return; fi
  log "installing qemu-user-static"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
}

# --- 2. an aarch64 Python 3.11 root from Debian arm64 debs -----------------------------------------------
ensure_root() {
  if [ -f "$ROOT/.complete" ] && [ -x "$ROOT/usr/bin/python$PY_VER" ]; then return; fi
  log "building aarch64 Python $PY_VER root in $ROOT"
  local added=0 debdir="$ARM_DIR/debs"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64; added=1
  fi
  apt-get update -qq
  rm -rf "$debdir" "$ROOT"; mkdir -p "$debdir" "$ROOT"
  local pkgs=() p
  for p in "${DEBS[@]}"; do pkgs+=("$p:arm64"); done
  (cd "$debdir" && apt-get download -qq "${pkgs[@]}")
  for deb in "$debdir"/*.deb; do dpkg -x "$deb" "$ROOT"; done
  if [ "$added" = 1 ]; then
    dpkg --remove-architecture arm64 || true
    apt-get update -qq || true
  fi
  [ -x "$ROOT/usr/bin/python$PY_VER" ] || die "no $ROOT/usr/bin/python$PY_VER after extracting the debs"
  touch "$ROOT/.complete"
}

# --- 3. aarch64 wheels: LiteRT, numpy, Pillow (+ pytest, click for --pytest) -----------------------------
pip_target() {  # pip_target MARKER PACKAGES...
  local marker=$1; shift
  if [ -f "$SITE/.$marker" ]; then return; fi
  log "pip install (aarch64 wheels) into $SITE: $*"
  "$HOST_PY" -m pip install -q --disable-pip-version-check --upgrade --target "$SITE" \
      --platform manylinux_2_27_aarch64 --python-version "$PY_VER" --implementation cp --only-binary=:all: "$@"
  touch "$SITE/.$marker"
}

# --- 4. a Cortex-A72 /proc/cpuinfo (LiteRT segfaults at interpreter creation on an x86 cpuinfo) -----------
ensure_cpuinfo() {
  if [ -s "$CPUINFO" ]; then return; fi
  local i tmp="$CPUINFO.tmp"
  : > "$tmp"
  for i in 0 1 2 3; do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i" >> "$tmp"
  done
  mv "$tmp" "$CPUINFO"
}

# A wrapper so that aarch64 Python child processes (subprocess tests) run under qemu too, without binfmt_misc:
# qemu-user passes execve to the host kernel, which runs this x86 shell script natively.
ensure_wrapper() {
  mkdir -p "$ARM_DIR/bin"
  cat > "$ARM_DIR/bin/python-arm.tmp" <<WRAP
#!/bin/sh
exec env PYTHONPATH="\${PYTHONPATH:+\$PYTHONPATH:}$REPO:$SITE" PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 \\
  qemu-aarch64-static -cpu "$QEMU_CPU_MODEL" -L "$ROOT" "$ROOT/usr/bin/python$PY_VER" "\$@"
WRAP
  chmod +x "$ARM_DIR/bin/python-arm.tmp"; mv "$ARM_DIR/bin/python-arm.tmp" "$ARM_DIR/bin/python-arm"
}

# Run an aarch64 python under qemu, in a private mount namespace with the ARM cpuinfo.
#   QEMU_LD_PREFIX/QEMU_CPU also make aarch64 child processes work when binfmt_misc is registered.
arm_python() {
  unshare -m -- /bin/sh -c 'mount --bind "$0" /proc/cpuinfo && exec "$@"' "$CPUINFO" \
    env PYTHONPATH="$REPO:$SITE" PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 QEMU_LD_PREFIX="$ROOT" \
        QEMU_CPU="$QEMU_CPU_MODEL" \
    qemu-aarch64-static -cpu "$QEMU_CPU_MODEL" -L "$ROOT" "$ROOT/usr/bin/python$PY_VER" "$@"
}

t_setup=$(date +%s)
ensure_qemu
ensure_root
pip_target runtime.complete ai-edge-litert numpy pillow
[ "$PYTEST" = 1 ] && pip_target pytest.complete pytest click
ensure_cpuinfo
ensure_wrapper
log "set-up ready in $(( $(date +%s) - t_setup )) s (cache: $ARM_DIR)"
flock -u 9

if [ "$SETUP_ONLY" = 1 ]; then
  arm_python -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])'
  exit 0
fi

MODEL=$1; shift
[ -f "$MODEL" ] || die "$MODEL: model file not found"
MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
IMAGES=()
for a in "$@"; do
  [ -e "$a" ] || die "$a: no such file or folder"
  IMAGES+=("$(cd "$(dirname "$a")" && pwd)/$(basename "$a")")
done
NAME=$(basename "$MODEL"); NAME=${NAME%.tflite}
mkdir -p "$RESULTS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wbc-arm-run.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cd "$REPO"
log "x86 run: $NAME on ${#IMAGES[@]} path(s)"
"$HOST_PY" "$HERE/check_runtime.py" run "$MODEL" "${IMAGES[@]}" --out "$WORK/x86.json"
log "aarch64 run under qemu ($QEMU_CPU_MODEL): slow, be patient"
t0=$(date +%s)
arm_python "$HERE/check_runtime.py" run "$MODEL" "${IMAGES[@]}" --out "$WORK/arm.json"
log "aarch64 run took $(( $(date +%s) - t0 )) s"

PYTEST_JSON=()
if [ "$PYTEST" = 1 ]; then
  log "pytest tests/test_runtime.py under emulation"
  tdir="$WORK/test-models"
  "$HOST_PY" "$HERE/make_tiny_models.py" --out "$tdir" >&2
  t0=$(date +%s); rc=0
  WBC_EDGE_TEST_TFLITE_DIR="$tdir" WBC_EDGE_TEST_PYTHON="$ARM_DIR/bin/python-arm" \
      arm_python -m pytest -q -p no:cacheprovider "$REPO/tests/test_runtime.py" > "$WORK/pytest.log" 2>&1 || rc=$?
  tail -n 40 "$WORK/pytest.log" >&2
  printf '{"rc": %d, "seconds": %d}\n' "$rc" "$(( $(date +%s) - t0 ))" > "$WORK/pytest.json"
  tail -n 30 "$WORK/pytest.log" > "$WORK/pytest.tail"
  PYTEST_JSON=(--pytest "$WORK/pytest.json" --pytest-log "$WORK/pytest.tail")
fi

"$HOST_PY" "$HERE/check_runtime.py" compare "$WORK/x86.json" "$WORK/arm.json" \
    --json-out "$RESULTS/$NAME.json" --md-out "$RESULTS/$NAME.md" --qemu-cpu "$QEMU_CPU_MODEL" "${PYTEST_JSON[@]}"
