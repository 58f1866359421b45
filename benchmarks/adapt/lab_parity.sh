#!/usr/bin/env bash
# int8 parity on a new lab before and after adapting: Tecom as the lab, k = 10, seeds 0 1 2 (default).
#
#   SHARED=../shared benchmarks/adapt/lab_parity.sh [SEED ...]
#
# Why: off-domain, int8 disagrees with float32 where the float model is unsure (issue 14: the shipped model's int8
# agrees on 86 % of Tecom). Adapting makes the model sure of the lab's cells; does int8 follow? Per seed:
# `wbc-edge adapt` (runs/lab_tecom_k10_s<seed>, the documented lab workflow), `wbc-edge export` (float32, float16,
# int8, int8_mixed; the export's parity gate runs on the lab's test split), then `wbc-edge bench` of the adapted
# files and of the shipped export/ files on the same test split (each against its own float32). The raw bench
# JSON goes to $RAW (default /tmp/wbc_lab_parity: it names Tecom files, which are not shipped); the summary
# (numbers only) to benchmarks/adapt/results_s3/lab_parity_tecom_k10.{md,json} via lab_parity_summary.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared}
RAW=${RAW:-/tmp/wbc_lab_parity}
W=${WBC:-.venv/bin/wbc-edge}
T=$SHARED/data/zheng2018_tecom
SEEDS=${*:-0 1 2}
mkdir -p "$RAW"
for s in $SEEDS; do
  R=runs/lab_tecom_k10_s$s
  [ -f "$R/model.keras" ] || $W adapt runs/robust/robust_s3 "$T" --out "$R" --per-class 10 --seed "$s" --force --quiet
  # exit 1 when a variant fails its parity gate: recorded in the manifest, not a reason to stop here
  [ -f "$R/export/manifest.json" ] || $W export "$R" --float32 --float16 --int8 --int8-mixed --quiet || true
  for which in adapted shipped; do
    D=$([ $which = adapted ] && echo "$R/export" || echo export)
    $W bench run "$D/wbc_float16.tflite" "$D/wbc_int8.tflite" "$D/wbc_int8_mixed.tflite" \
      --reference "$D/wbc_float32.tflite" --data "$T" --split-manifest "$R/split.csv" --runs 5 --no-ttfp \
      --json "$RAW/${which}_s$s.json" --markdown "$RAW/${which}_s$s.md"
  done
done
.venv/bin/python benchmarks/adapt/lab_parity_summary.py "$RAW" --manifests runs/lab_tecom_k10_s*/export/manifest.json
