#!/usr/bin/env bash
# PBC+LISC, the robust recipe, seeds in order; each resumable (re-running the command continues a run).
cd "$(dirname "$0")/../.."
for SEED in "$@"; do
  .venv/bin/wbc-edge train pbc=../shared/data/pbc lisc=../shared/data/lisc --out runs/two_labs/s$SEED \
    --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
    --seed $SEED --split-seed 42 --augment robust --shared-cache runs/two_labs/cache > runs/two_labs/s$SEED.log 2>&1
  echo "seed $SEED done: $?" >> runs/two_labs/seeds.log
done
