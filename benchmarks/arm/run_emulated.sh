#!/usr/bin/env bash
# Run wbc_edge.runtime on ARM under qemu-user emulation and compare it with the same run on this x86 host.
#
# Usage:  benchmarks/arm/run_emulated.sh [--arch aarch64|armv7l] [--pytest] MODEL.tflite IMAGE_OR_FOLDER...
#         benchmarks/arm/run_emulated.sh [--arch aarch64|armv7l] --setup-only
#
#   --arch aarch64 (default): 64-bit Raspberry Pi OS / any aarch64 Linux: Debian arm64 Python 3.11 +
#             ai-edge-litert, numpy, Pillow wheels from PyPI.
#   --arch armv7l: 32-bit Raspberry Pi OS (bookworm): Debian armhf Python 3.11 + python3-numpy 1.24.2 and
#             python3-pil 9.4.0 debs (PyPI has no armv7l wheels of either) + the tflite-runtime 2.14.0
#             armv7l wheel from PyPI (LiteRT has none for armv7l; tflite-runtime needs numpy < 2).
#
#   Writes benchmarks/arm/results/<model-name>.json (both runs + comparison) and <model-name>.md (armv7l:
#   armv7l_<model-name>.*), exits 0 when the ARM run gives the same top-1 labels as x86 and max |dprob| is
#   within tolerance (1 output quantisation step for integer outputs, 1e-5 for float outputs), else 1.
#   --pytest  also runs tests/test_runtime.py under emulation (TF-free parts; models must be pre-made, see
#             WBC_EDGE_TEST_TFLITE_DIR in tests/test_runtime.py; made here with benchmarks/arm/make_tiny_models.py).
#
# Environment:
#   WBC_ARM_DIR      cache for the emulated root + aarch64 site-packages (default /tmp/wbc-arm); set-up is
#                    idempotent: a finished step leaves a marker and is skipped next time.
#   WBC_ARM_RESULTS  output folder (default benchmarks/arm/results)
#   WBC_HOST_PYTHON  x86 python with wbc_edge's deps + ai-edge-litert (default .venv/bin/python, else python3)
#   WBC_ARM_CPU      qemu -cpu model (default cortex-a72, a Raspberry Pi 4 core; armv7l: cortex-a7, a Raspberry
#                    Pi 2 core = the ARMv7 + NEON/VFPv4 baseline of 32-bit Pi OS)
#   WBC_ARM_ARCH     the default for --arch
#   WBC_X86_SAME_PYTHON  optional: an x86 python with the ARM run's interpreter (armv7l: tflite-runtime 2.14.0
#                    + numpy 1.26.4), to separate "ARM vs x86" from "LiteRT vs tflite-runtime" in the result
#
# Needs root (apt-get, unshare -m + mount --bind) and network access to the Debian mirror and PyPI for the
# first set-up.  Method and facts: ../shared/design/TOOLCHAIN.md "ARM (aarch64) under emulation".
# Emulated latency is meaningless (qemu is ~10-50x slower than a real core); only outputs are compared.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$REPO/benchmarks/arm"
ARM_DIR=${WBC_ARM_DIR:-/tmp/wbc-arm}
RESULTS=${WBC_ARM_RESULTS:-$HERE/results}
HOST_PY=${WBC_HOST_PYTHON:-$REPO/.venv/bin/python}
[ -x "$HOST_PY" ] || HOST_PY=$(command -v python3)
PY_VER=3.11
ARCH=${WBC_ARM_ARCH:-aarch64}
TFLITE_RUNTIME_VERSION=2.14.0   # the last tflite-runtime release; the only interpreter for armv7l

# The arm64 debs that make a working python3.11 (bookworm names; see TOOLCHAIN.md).
DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libssl3 libstdc++6 libgcc-s1 zlib1g
      libffi8 libexpat1 libsqlite3-0 libbz2-1.0 liblzma5 libzstd1 libncursesw6 libtinfo6 libreadline8 libuuid1
      libcrypt1 libtirpc3 libnsl2 libdb5.3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2
      libkeyutils1 gcc-12-base)

# Extra armhf debs for armv7l: numpy and Pillow (PyPI has no armv7l wheels of them) and their libraries.
ARMHF_EXTRA_DEBS=(python3-numpy libblas3 liblapack3 libgfortran5 libgomp1 python3-pil libfreetype6 libimagequant0
      libjpeg62-turbo liblcms2-2 libopenjp2-7 libraqm0 libtiff6 libwebp7 libwebpdemux2 libwebpmux3 libxcb1
      libpng16-16 libbrotli1 libdeflate0 libjbig0 liblerc4 libfribidi0 libharfbuzz0b libglib2.0-0 libgraphite2-3
      libxau6 libxdmcp6 libbsd0 libmd0 libpcre2-8-0 libmount1 libblkid1 libselinux1)

log() { printf '[run_emulated] %s\n' "$*" >&2; }
die() { printf '[run_emulated] error: %s\n' "$*" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2; }

PYTEST=0
SETUP_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --pytest) PYTEST=1; shift ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    --arch) [ $# -ge 2 ] || die "--arch needs a value"; ARCH=$2; shift 2 ;;
    --arch=*) ARCH=${1#--arch=}; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
if [ "$SETUP_ONLY" = 0 ] && [ $# -lt 2 ]; then usage; fi
[ "$(id -u)" = 0 ] || die "needs root (apt-get, unshare -m, mount --bind); run with sudo"

case "$ARCH" in
  aarch64)
    DEB_ARCH=arm64; QEMU=qemu-aarch64-static; QEMU_CPU_MODEL=${WBC_ARM_CPU:-cortex-a72}
    ROOT="$ARM_DIR/root"; SITE="$ARM_DIR/site"; CPUINFO="$ARM_DIR/cpuinfo-cortex-a72.txt"
    WHEEL_PLATFORM=manylinux_2_27_aarch64; RESULT_PREFIX=""; EXTRA_DEBS=()
    EXTRA_PYTHONPATH="" ;;
  armv7l)
    DEB_ARCH=armhf; QEMU=qemu-arm-static; QEMU_CPU_MODEL=${WBC_ARM_CPU:-cortex-a7}
    ROOT="$ARM_DIR/armv7l/root"; SITE="$ARM_DIR/armv7l/site"; CPUINFO="$ARM_DIR/armv7l/cpuinfo-$QEMU_CPU_MODEL.txt"
    WHEEL_PLATFORM=manylinux_2_34_armv7l; RESULT_PREFIX="armv7l_"; EXTRA_DEBS=("${ARMHF_EXTRA_DEBS[@]}")
    EXTRA_PYTHONPATH=":$ROOT/usr/lib/python3/dist-packages" ;;
  *) die "--arch must be aarch64 or armv7l, got $ARCH" ;;
esac

mkdir -p "$ARM_DIR"
exec 9>"$ARM_DIR/.lock"
flock 9   # one set-up at a time

# --- 1. qemu-user-static -------------------------------------------------------------------------------
ensure_qemu() {
  if command -v "$QEMU" >/dev/null; then return; fi
  log "installing qemu-user-static"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
}

# --- 2. an ARM Python 3.11 root from Debian arm64 / armhf debs -------------------------------------------
ensure_root() {
  if [ -f "$ROOT/.complete" ] && [ -x "$ROOT/usr/bin/python$PY_VER" ]; then return; fi
  log "building $ARCH ($DEB_ARCH) Python $PY_VER root in $ROOT"
  local added=0 debdir="$ROOT.debs"
  if ! dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH"; then
    dpkg --add-architecture "$DEB_ARCH"; added=1
  fi
  apt-get update -qq
  rm -rf "$debdir" "$ROOT"; mkdir -p "$debdir" "$ROOT"
  local pkgs=() p
  for p in "${DEBS[@]}" "${EXTRA_DEBS[@]}"; do pkgs+=("$p:$DEB_ARCH"); done
  (cd "$debdir" && apt-get download -qq "${pkgs[@]}")
  for deb in "$debdir"/*.deb; do dpkg -x "$deb" "$ROOT"; done
  if [ "$added" = 1 ]; then
    dpkg --remove-architecture "$DEB_ARCH" || true
    apt-get update -qq || true
  fi
  [ -x "$ROOT/usr/bin/python$PY_VER" ] || die "no $ROOT/usr/bin/python$PY_VER after extracting the debs"
  if [ "$ARCH" = armv7l ]; then
    # update-alternatives (not run by dpkg -x) would make these links; numpy is linked against them
    local libdir="$ROOT/usr/lib/arm-linux-gnueabihf"
    ln -sf blas/libblas.so.3 "$libdir/libblas.so.3"
    ln -sf lapack/liblapack.so.3 "$libdir/liblapack.so.3"
  fi
  touch "$ROOT/.complete"
}

# --- 3. ARM wheels: aarch64 LiteRT, numpy, Pillow / armv7l tflite-runtime (+ pytest, click for --pytest) ---
pip_target() {  # pip_target MARKER PIP-ARGS...
  local marker=$1; shift
  if [ -f "$SITE/.$marker" ]; then return; fi
  log "pip install ($ARCH wheels) into $SITE: $*"
  "$HOST_PY" -m pip install -q --disable-pip-version-check --upgrade --target "$SITE" \
      --platform "$WHEEL_PLATFORM" --python-version "$PY_VER" --implementation cp --only-binary=:all: "$@"
  touch "$SITE/.$marker"
}

# --- 4. an ARM /proc/cpuinfo (LiteRT segfaults at interpreter creation on an x86 cpuinfo) ----------------
ensure_cpuinfo() {
  if [ -s "$CPUINFO" ]; then return; fi
  local i tmp="$CPUINFO.tmp"
  mkdir -p "$(dirname "$CPUINFO")"
  : > "$tmp"
  for i in 0 1 2 3; do
    if [ "$ARCH" = armv7l ]; then  # a Raspberry Pi 2 (Cortex-A7) under 32-bit Raspberry Pi OS
      printf 'processor\t: %d\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm\nCPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\nCPU part\t: 0xc07\nCPU revision\t: 5\n\n' "$i" >> "$tmp"
    else
      printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i" >> "$tmp"
    fi
  done
  [ "$ARCH" = armv7l ] && printf 'Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 2 Model B Rev 1.1\n' >> "$tmp"
  mv "$tmp" "$CPUINFO"
}

# A wrapper so that ARM Python child processes (subprocess tests) run under qemu too, without binfmt_misc:
# qemu-user passes execve to the host kernel, which runs this x86 shell script natively.
WRAPPER="$ARM_DIR/bin/python-$ARCH"
ensure_wrapper() {
  mkdir -p "$ARM_DIR/bin"
  cat > "$WRAPPER.tmp" <<WRAP
#!/bin/sh
exec env PYTHONPATH="\${PYTHONPATH:+\$PYTHONPATH:}$REPO:$SITE$EXTRA_PYTHONPATH" PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 \\
  $QEMU -cpu "$QEMU_CPU_MODEL" -L "$ROOT" "$ROOT/usr/bin/python$PY_VER" "\$@"
WRAP
  chmod +x "$WRAPPER.tmp"; mv "$WRAPPER.tmp" "$WRAPPER"
}

# Run an ARM python under qemu, in a private mount namespace with the ARM cpuinfo.
#   QEMU_LD_PREFIX/QEMU_CPU also make ARM child processes work when binfmt_misc is registered.
arm_python() {
  unshare -m -- /bin/sh -c 'mount --bind "$0" /proc/cpuinfo && exec "$@"' "$CPUINFO" \
    env PYTHONPATH="$REPO:$SITE$EXTRA_PYTHONPATH" PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1 \
        QEMU_LD_PREFIX="$ROOT" QEMU_CPU="$QEMU_CPU_MODEL" \
    "$QEMU" -cpu "$QEMU_CPU_MODEL" -L "$ROOT" "$ROOT/usr/bin/python$PY_VER" "$@"
}

t_setup=$(date +%s)
ensure_qemu
ensure_root
if [ "$ARCH" = armv7l ]; then
  # --no-deps: its numpy requirement is met by the python3-numpy deb (1.24.2) in the root, not by a wheel
  pip_target runtime.complete --no-deps "tflite-runtime==$TFLITE_RUNTIME_VERSION"
else
  pip_target runtime.complete ai-edge-litert numpy pillow
fi
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
log "$ARCH run under qemu ($QEMU_CPU_MODEL): slow, be patient"
t0=$(date +%s)
arm_rc=0
arm_python "$HERE/check_runtime.py" run "$MODEL" "${IMAGES[@]}" --out "$WORK/arm.json" || arm_rc=$?
[ -s "$WORK/arm.json" ] || die "the $ARCH run failed (exit $arm_rc) without writing its result"
log "$ARCH run took $(( $(date +%s) - t0 )) s"

SAME_JSON=()
if [ -n "${WBC_X86_SAME_PYTHON:-}" ]; then
  log "x86 run with the ARM run's interpreter ($WBC_X86_SAME_PYTHON)"
  "$WBC_X86_SAME_PYTHON" "$HERE/check_runtime.py" run "$MODEL" "${IMAGES[@]}" --out "$WORK/x86_same.json" \
    && SAME_JSON=(--x86-same-interpreter "$WORK/x86_same.json")
fi

PYTEST_JSON=()
if [ "$PYTEST" = 1 ]; then
  log "pytest tests/test_runtime.py under emulation"
  tdir="$WORK/test-models"
  "$HOST_PY" "$HERE/make_tiny_models.py" --out "$tdir" >&2
  t0=$(date +%s); rc=0
  WBC_EDGE_TEST_TFLITE_DIR="$tdir" WBC_EDGE_TEST_PYTHON="$WRAPPER" \
      arm_python -m pytest -q -p no:cacheprovider "$REPO/tests/test_runtime.py" > "$WORK/pytest.log" 2>&1 || rc=$?
  tail -n 40 "$WORK/pytest.log" >&2
  printf '{"rc": %d, "seconds": %d}\n' "$rc" "$(( $(date +%s) - t0 ))" > "$WORK/pytest.json"
  tail -n 30 "$WORK/pytest.log" > "$WORK/pytest.tail"
  PYTEST_JSON=(--pytest "$WORK/pytest.json" --pytest-log "$WORK/pytest.tail")
fi

"$HOST_PY" "$HERE/check_runtime.py" compare "$WORK/x86.json" "$WORK/arm.json" --arch "$ARCH" \
    --json-out "$RESULTS/$RESULT_PREFIX$NAME.json" --md-out "$RESULTS/$RESULT_PREFIX$NAME.md" \
    --qemu-cpu "$QEMU_CPU_MODEL" "${PYTEST_JSON[@]}" "${SAME_JSON[@]}"
