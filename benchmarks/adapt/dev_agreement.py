"""Does a dev screen's val half predict its test half?  Every recorded (variant, default) pair, side by side.

    .venv/bin/python benchmarks/adapt/dev_agreement.py --out benchmarks/adapt/dev/agreement.md

Why: each adapt recipe change was chosen, by a rule written first, on the *val halves* of the dev seeds (what a lab
has: `wbc-edge adapt` holds out a val half too); the *test halves* were printed but never chosen on.  If the change
of the val-half mean predicted the change of the test-half mean, the screens could resolve recipe changes of the
size that is left; this script measures whether it does, over every pair recorded in benchmarks/adapt/dev/.
Per (variant, set, k): the mean change over the seeds both arms ran, val and test halves; then the correlation and
the share of pairs whose two changes have the same sign.  It decides nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from dev_compare import bal, emit, load, shared_runs

DEV = Path(__file__).parent / "dev"
#: (name, candidate FILE:ARM, default FILE:ARM) of every dev screen, in the order they ran
PAIRS = [
    ("lr 3e-4", "tecom_k10_runs.jsonl:lr3e4", "tecom_k10_runs.jsonl:pbc"),
    ("lr 3e-4", "cellavision_k5_runs.jsonl:lr3e4", "cellavision_k5_runs.jsonl:pbc"),
    ("min 160 steps", "tecom_k10_runs.jsonl:s160", "tecom_k10_runs.jsonl:pbc"),
    ("min 160 steps", "cellavision_k5_runs.jsonl:s160", "cellavision_k5_runs.jsonl:pbc"),
    ("lr 3e-4 + 160 steps", "tecom_k10_runs.jsonl:lr3e4_s160", "tecom_k10_runs.jsonl:pbc"),
    ("lr 3e-4 + 160 steps", "cellavision_k5_runs.jsonl:lr3e4_s160", "cellavision_k5_runs.jsonl:pbc"),
    ("25 % replay", "tecom_k10_runs.jsonl:rs25", "tecom_k10_runs.jsonl:pbc"),
    ("25 % replay", "cellavision_k5_runs.jsonl:rs25", "cellavision_k5_runs.jsonl:pbc"),
    ("cut 4", "cut_views_runs.jsonl:c4", "cut_views_runs.jsonl:pbc"),
    ("cut 7", "cut_views_runs.jsonl:c7", "cut_views_runs.jsonl:pbc"),
    ("scale views", "cut_views_runs.jsonl:sc", "cut_views_runs.jsonl:pbc"),
    ("cut 7 + scale views", "cut7_scale_runs.jsonl:c7s", "cut7_scale_runs.jsonl:pbc"),
    ("SWA", "swa_runs.jsonl:swa", "swa_runs.jsonl:pbc"),
    ("replay 1000", "replay1000_runs.jsonl:rep1000", "replay1000_runs.jsonl:pbc"),
    ("min 320 steps", "steps320_runs.jsonl:s320", "swa_runs.jsonl:swa"),
    ("12 views", "views12_runs.jsonl:v12", "swa_runs.jsonl:swa"),
    ("basic views", "basic_views_runs.jsonl:basic", "swa_runs.jsonl:swa"),
    ("cut 15", "cut15_runs.jsonl:c15", "swa_runs.jsonl:swa"),
    ("3 views", "views3_runs.jsonl:v3", "swa_runs.jsonl:swa"),
]


def changes(cand: dict, base: dict) -> list[tuple]:
    """[(set, k, seeds, val change pp, test change pp)] over the seeds both arms ran."""
    out = []
    for sk, seeds in shared_runs(cand, base):
        d = {part: float(np.mean([bal(cand[(*sk, sd)][part], sk[0]) - bal(base[(*sk, sd)][part], sk[0])
                                  for sd in seeds])) for part in ("val", "target")}
        out.append((sk[0], sk[1], seeds, d["val"], d["target"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dev", type=Path, default=DEV, help="the folder of the dev records")
    ap.add_argument("--out", type=Path, help="write the Markdown here too")
    args = ap.parse_args()
    lines = ["| variant | set, k | seeds | val-half change, pp | test-half change, pp |", "|---|---|---|---:|---:|"]
    val, test = [], []
    for name, c, b in PAIRS:
        for s, k, seeds, dv, dt in changes(load(str(args.dev / c)), load(str(args.dev / b))):
            lines.append(f"| {name} | {s} k={k} | {seeds[0]}-{seeds[-1]} ({len(seeds)}) | {dv:+.1f} | {dt:+.1f} |")
            val.append(dv)
            test.append(dt)
    v, t = np.array(val), np.array(test)
    same = int(np.sum(np.sign(v) == np.sign(t)))
    big = np.abs(v) >= 2.0
    lines += ["", f"{len(v)} (variant, set, k) pairs. Correlation of the val-half and test-half changes: "
              f"{np.corrcoef(v, t)[0, 1]:+.2f}; same sign: {same} of {len(v)}; where the val half moved by >= 2 pp: "
              f"same sign {int(np.sum(np.sign(v[big]) == np.sign(t[big])))} of {int(big.sum())}. "
              f"Mean |val change| {np.mean(np.abs(v)):.1f} pp, mean |test change| {np.mean(np.abs(t)):.1f} pp, "
              f"mean |val - test| {np.mean(np.abs(v - t)):.1f} pp.",
              "Tecom: balanced accuracy over EO/LY/MO/NE; CellaVision: over the classes present; changes are "
              "candidate minus default, mean over the seeds."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
