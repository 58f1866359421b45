#!/usr/bin/env bash
# Time a .tflite model on an Android phone with LiteRT's benchmark_model, and convert the output into a
# wbc-edge bench result JSON that `wbc-edge bench merge` combines with host / Raspberry Pi results.
#
#   benchmarks/android/run_benchmark_model.sh MODEL.tflite [--threads N] [--benchmark-binary PATH]
#       [--runs 50] [--warmup 5] [--no-xnnpack] [--op-profiling] [--out DIR] [--serial SERIAL]
#
# Needs: adb (platform-tools) with one device attached (or --serial), USB debugging on, and a
# benchmark_model binary for the phone's ABI that you downloaded yourself (LiteRT / TensorFlow Lite
# "benchmark_model" prebuilt for android_aarch64 or android_arm, or built with
# `bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model`).
# Default binary path: ./benchmark_model (or $BENCHMARK_MODEL).
# Python side: the wbc_edge package importable by $PYTHON (default python3) - the core install is enough.
#
# Writes DIR/<device>_<model>_t<N>.txt (the raw output) and .json (converted); DIR defaults to
# benchmarks/results/android.
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

MODEL=""
THREADS=4
BINARY="${BENCHMARK_MODEL:-./benchmark_model}"
RUNS=50
WARMUP=5
XNNPACK=true
OP_PROFILING=false
OUT_DIR=""
PYTHON="${PYTHON:-python3}"
REMOTE_DIR=/data/local/tmp/wbc_edge_bench

while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) THREADS="$2"; shift 2 ;;
    --benchmark-binary) BINARY="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --no-xnnpack) XNNPACK=false; shift ;;
    --op-profiling) OP_PROFILING=true; shift ;;
    --out) OUT_DIR="$2"; shift 2 ;;
    --serial) export ANDROID_SERIAL="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    -*) echo "unknown option: $1" >&2; usage 2 ;;
    *) [[ -z "$MODEL" ]] || { echo "only one MODEL.tflite at a time" >&2; exit 2; }; MODEL="$1"; shift ;;
  esac
done

[[ -n "$MODEL" ]] || { echo "error: MODEL.tflite missing" >&2; usage 2; }
[[ -f "$MODEL" ]] || { echo "error: $MODEL: no such file" >&2; exit 2; }
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "error: --threads must be a positive integer" >&2; exit 2; }
command -v adb >/dev/null || { echo "error: adb not found (install Android platform-tools)" >&2; exit 2; }
[[ -f "$BINARY" ]] || { echo "error: benchmark_model binary not found at $BINARY (--benchmark-binary PATH)" >&2; exit 2; }

state=$(adb get-state 2>/dev/null || true)
[[ "$state" == "device" ]] || { echo "error: no Android device ready (adb get-state: ${state:-none}); connect one, or --serial" >&2; exit 2; }

prop() { adb shell getprop "$1" | tr -d '\r'; }
DEVICE=$(prop ro.product.model)
ABI=$(prop ro.product.cpu.abi)
RELEASE=$(prop ro.build.version.release)
SOC=$(prop ro.soc.model)
[[ -n "$SOC" ]] || SOC=$(prop ro.board.platform)

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUT_DIR="${OUT_DIR:-$REPO/benchmarks/results/android}"
mkdir -p "$OUT_DIR"
NAME=$(basename "$MODEL" .tflite)
SAFE_DEVICE=$(echo "${DEVICE:-android}" | tr -c 'A-Za-z0-9._-' '_' | sed 's/_*$//')
STEM="$OUT_DIR/${SAFE_DEVICE}_${NAME}_t${THREADS}"

echo "device: $DEVICE ($ABI, Android $RELEASE, SoC ${SOC:-?}); model: $MODEL; threads: $THREADS" >&2
adb shell mkdir -p "$REMOTE_DIR" >/dev/null
adb push "$BINARY" "$REMOTE_DIR/benchmark_model" >/dev/null
adb shell chmod 755 "$REMOTE_DIR/benchmark_model"
adb push "$MODEL" "$REMOTE_DIR/$NAME.tflite" >/dev/null

# benchmark_model logs to stderr: 2>&1 on the device side; strip the CRs adb adds.
ARGS="--graph=$REMOTE_DIR/$NAME.tflite --num_threads=$THREADS --num_runs=$RUNS --warmup_runs=$WARMUP"
ARGS="$ARGS --use_xnnpack=$XNNPACK --enable_op_profiling=$OP_PROFILING"
echo "running: benchmark_model $ARGS" >&2
adb shell "$REMOTE_DIR/benchmark_model $ARGS 2>&1" | tr -d '\r' > "$STEM.txt" || true

if ! grep -q "Inference timings in us" "$STEM.txt"; then
  echo "error: benchmark_model did not finish; its output is in $STEM.txt:" >&2
  tail -n 15 "$STEM.txt" >&2
  exit 1
fi

PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m wbc_edge.bench.android "$STEM.txt" \
  --model "$MODEL" --threads "$THREADS" --device "$DEVICE" --abi "$ABI" --android-release "$RELEASE" \
  --soc "$SOC" --binary "$(basename "$BINARY")" --json "$STEM.json"
echo "raw output: $STEM.txt" >&2
echo "merge with: wbc-edge bench merge $STEM.json OTHER.json ... --markdown all.md" >&2
