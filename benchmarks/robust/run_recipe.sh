#!/usr/bin/env bash
# Train one augmentation recipe for several seeds on PBC (same leak-free split), then score each model on
# PBC test + the cross-domain sets with `wbc-edge crossdomain`.  Resumable: re-run the same command after an
# interruption (finished runs are skipped, unfinished ones resume).  Then: python benchmarks/robust/summarize.py
#
#   SHARED=../shared benchmarks/robust/run_recipe.sh robust 42 1 2      # the recipe, three seeds
#   SHARED=../shared benchmarks/robust/run_recipe.sh colour 42          # an ablation row
#
# Env: SHARED (folder with data/ and weights/, default ../shared), RUNS (default runs/robust),
#      EXTRA (extra `wbc-edge train` options), NAME (run name prefix, default PRESET: set it when EXTRA
#      makes a variant of a preset, e.g. NAME=robust_ft7 EXTRA="--finetune-from 7").
#      Each run's log is RUNS/<name>_s<seed>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
PRESET=${1:?usage: run_recipe.sh PRESET SEED...}; shift
SHARED=${SHARED:-../shared}
RUNS=${RUNS:-runs/robust}
NAME=${NAME:-$PRESET}
WBC=${WBC:-.venv/bin/wbc-edge}
SPLIT=benchmarks/training/pbc224_cached/split.csv
WEIGHTS=$SHARED/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
mkdir -p "$RUNS"
for SEED in "$@"; do
  RUN=$RUNS/${NAME}_s$SEED
  if [ ! -f "$RUN/run.json" ] || [ -f "$RUN/checkpoints/split.csv" ]; then
    echo "== train $RUN ($(date +%T))"
    # Re-running the same command resumes an interrupted run, so a failed attempt is simply retried.
    for attempt in 1 2 3; do
      # shellcheck disable=SC2086
      if $WBC train "$SHARED/data/pbc" --out "$RUN" --weights "$WEIGHTS" --split-manifest "$SPLIT" --seed "$SEED" \
          --augment "$PRESET" --shared-cache "$RUNS/shared_cache" ${EXTRA:-} >> "$RUNS/${NAME}_s$SEED.log" 2>&1; then
        break
      fi
      echo "   attempt $attempt failed (see $RUNS/${NAME}_s$SEED.log)"; sleep 30
    done
  fi
  if [ ! -f "$RUN/crossdomain/crossdomain.json" ]; then
    echo "== crossdomain $RUN ($(date +%T))"
    $WBC crossdomain "$RUN/model.keras" --data "PBC test=$SHARED/data/pbc" --split-manifest "$RUN/split.csv" \
      --data "$SHARED/data/zheng2018_tecom" --data "$SHARED/data/zheng2018_cellavision" \
      --out "$RUN/crossdomain" > /dev/null 2>> "$RUNS/${NAME}_s$SEED.log"
  fi
done
echo "== done ($(date +%T))"
