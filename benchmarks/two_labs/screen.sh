#!/usr/bin/env bash
# screen.sh NAME SEED [extra train args]: one PBC+LISC run of the screens (SCREENS_RULE.md): the run_seeds.sh
# recipe plus the extra flags, into runs/two_labs/NAME (log beside it); resumable like every training run.
# (The 2026-12-07 screens ran this from a git worktree of the same commit, so the package could change meanwhile.)
cd "$(dirname "$0")/../.."
NAME=$1; SEED=$2; shift 2
.venv/bin/wbc-edge train pbc=../shared/data/pbc lisc=../shared/data/lisc --out runs/two_labs/$NAME \
  --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
  --seed $SEED --split-seed 42 --augment robust --shared-cache runs/two_labs/cache "$@" > runs/two_labs/$NAME.log 2>&1
echo "$NAME done: $? $(date -u +%H:%M)" >> runs/two_labs/seeds.log
