#!/usr/bin/env bash
# The whole pipeline for one seed, timed from a cold start: train (robust recipe, no shared activation
# cache) -> export --all (with per-domain parity) -> bench (PBC test + the other labs' sets).  Issue 10 asks
# for <= 60 min on 2 CPU cores; run it on an otherwise idle host, or the figure says nothing.
#
#   SHARED=../shared benchmarks/robust/pipeline_time.sh 3        # seed 3 -> runs/pipeline/robust_s3
#   NAME=robust_ft7 EXTRA="--finetune-from 7" SHARED=../shared benchmarks/robust/pipeline_time.sh 3
#                                                                   # a variant -> runs/pipeline/robust_ft7_s3
#
# Writes OUT/pipeline_time.json (wall seconds per stage, load average, CPUs) next to the run, and prints it.
# Not resumable on purpose (a resumed run's time is not a pipeline's time): an existing run dir is refused.
set -euo pipefail
cd "$(dirname "$0")/../.."
SEED=${1:?usage: pipeline_time.sh SEED}
SHARED=${SHARED:-../shared}
WBC=${WBC:-.venv/bin/wbc-edge}
RUN=${RUNS:-runs/pipeline}/${NAME:-robust}_s$SEED
SPLIT=benchmarks/training/pbc224_cached/split.csv
WEIGHTS=$SHARED/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
TECOM=$SHARED/data/zheng2018_tecom
CV=$SHARED/data/zheng2018_cellavision
if [ -e "$RUN" ]; then echo "$RUN exists: a timing run starts cold (remove it first)" >&2; exit 2; fi
mkdir -p "$RUN"
LOG=$RUN.log
stage() {  # stage NAME CMD... : run, append to the log, print and remember the wall seconds
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  echo "== $name ($(date +%T), load $(cut -d' ' -f1 /proc/loadavg))" | tee -a "$LOG"
  "$@" >> "$LOG" 2>&1
  local s; s=$(echo "$(date +%s.%N) - $t0" | bc)
  echo "   $name: $s s" | tee -a "$LOG"
  eval "T_$name=$s"
}
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086  # EXTRA is a list of options
stage train "$WBC" train "$SHARED/data/pbc" --out "$RUN" --weights "$WEIGHTS" --split-manifest "$SPLIT" \
  --seed "$SEED" --augment robust ${EXTRA:-}
stage export "$WBC" export "$RUN" --all --out "$RUN/export" --parity-data "Tecom=$TECOM" \
  --parity-data "CellaVision=$CV" --min-domain-agreement 0
stage bench "$WBC" bench run "$RUN/export/" --reference "$RUN/model.keras" --data "$SHARED/data/pbc" \
  --split-manifest "$RUN/split.csv" --split test --domain "Tecom=$TECOM" --domain "CellaVision=$CV" \
  --threads 1,2 --runs 100 --warmup 10 --max-accuracy-drop 0.2 --min-agreement 99.0 \
  --json "$RUN/bench.json" --markdown "$RUN/bench.md" --plot "$RUN/bench.png" || true
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
cat > "$RUN/pipeline_time.json" <<EOF
{"seed": $SEED, "run": "$RUN", "cpus": $(nproc), "cpu_model": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)",
 "load_avg_before": "$LOAD0", "load_avg_after": "$LOAD1", "shared_activation_cache": false, "extra": "${EXTRA:-}",
 "train_s": $T_train, "export_all_s": $T_export, "bench_s": $T_bench,
 "total_s": $(echo "$T_train + $T_export + $T_bench" | bc)}
EOF
cat "$RUN/pipeline_time.json"
