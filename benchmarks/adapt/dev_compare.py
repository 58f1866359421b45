"""Compare one adapt recipe variant with the default on the dev seeds, the way the dev screens' rules read them.

    .venv/bin/python benchmarks/adapt/dev_compare.py --candidate runs/adapt_v12/runs.jsonl:v12 \
        --baseline benchmarks/adapt/dev/swa_runs.jsonl:swa --name "aug_views 12" --out benchmarks/adapt/dev/views12.md

Why a script: every dev screen (benchmarks/adapt/dev/*_rule.md) compares the same things - per (set, k), the mean
val-half and test-half balanced accuracy (Tecom over EO/LY/MO/NE, the issue's figure; CellaVision over the classes
present), PBC val (the 500 images a recipe may be chosen on) and PBC test - over the seeds both arms ran. It prints
the table and the numbers the rules name; it decides nothing (the rule file does, and says so in words).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BIG4 = "zheng2018_tecom"  # the set whose issue figure is the balanced accuracy over EO/LY/MO/NE


def load(spec: str) -> dict[tuple, dict]:
    """FILE:ARM -> {(set, k, seed): record} of that arm."""
    path, _, arm = spec.rpartition(":")
    out = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if r["arm"] == arm:
            out[(r["set"], r["k"], r["seed"])] = r
    if not out:
        raise SystemExit(f"{spec}: no records of arm {arm!r}")
    return out


def bal(score: dict, name: str) -> float:
    return 100 * score["balanced_accuracy_big4" if name == BIG4 else "balanced_accuracy"]


def shared_runs(cand: dict, base: dict) -> list[tuple[tuple, list]]:
    """[((set, k), seeds)] of the runs both arms made, in (set, k) order."""
    keys = sorted(set(cand) & set(base))
    if not keys:
        raise SystemExit("the two arms share no (set, k, seed)")
    return [(sk, [sd for s, k, sd in keys if (s, k) == sk]) for sk in sorted({(s, k) for s, k, _ in keys})]


def emit(lines: list[str], out: Path | None) -> None:
    """Print the Markdown and, with --out, write it."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidate", required=True, help="RUNS.jsonl:ARM of the variant")
    ap.add_argument("--baseline", required=True, help="RUNS.jsonl:ARM of the default")
    ap.add_argument("--name", required=True, help="the variant's name in the table")
    ap.add_argument("--out", type=Path, help="write the Markdown here too")
    args = ap.parse_args()
    cand, base = load(args.candidate), load(args.baseline)
    lines = ["| dev seeds | arm | val half bal. % | test half bal. % | PBC val (500) % | PBC test % | fit s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    deltas, pv, pt = {}, {"base": [], "cand": []}, {"base": [], "cand": []}
    for sk, seeds in shared_runs(cand, base):
        rows = {}
        for tag, recs, label in (("base", base, "default"), ("cand", cand, args.name)):
            rs = [recs[(*sk, sd)] for sd in seeds]
            val = [bal(r["val"], sk[0]) for r in rs]
            test = [bal(r["target"], sk[0]) for r in rs]
            pv[tag] += [100 * r["pbc_val"]["accuracy"] for r in rs]
            pt[tag] += [100 * r["pbc_test"]["accuracy"] for r in rs]
            rows[tag] = (np.mean(val), np.mean(test))
            lines.append(f"| {sk[0]} k={sk[1]} (seeds {', '.join(map(str, seeds))}) | {label} | "
                         f"{np.mean(val):.1f} ± {np.std(val, ddof=1) if len(val) > 1 else 0:.1f} | "
                         f"{np.mean(test):.1f} ± {np.std(test, ddof=1) if len(test) > 1 else 0:.1f} | "
                         f"{np.mean([100 * r['pbc_val']['accuracy'] for r in rs]):.2f} | "
                         f"{np.mean([100 * r['pbc_test']['accuracy'] for r in rs]):.2f} | "
                         f"{np.mean([r['fit_s'] for r in rs]):.0f} |")
        deltas[sk] = (rows["cand"][0] - rows["base"][0], rows["cand"][1] - rows["base"][1])
        lines.append(f"| | change | {deltas[sk][0]:+.1f} | {deltas[sk][1]:+.1f} | | | |")
    val_d = [d[0] for d in deltas.values()]
    lines += ["", f"Val half, change per (set, k): {', '.join(f'{s} k={k} {d[0]:+.1f}' for (s, k), d in deltas.items())}"
              f"; mean {np.mean(val_d):+.2f} pp, worst {min(val_d):+.1f} pp.",
              f"PBC val (500 images), mean over the {len(pv['base'])} runs: default {np.mean(pv['base']):.2f} %, "
              f"{args.name} {np.mean(pv['cand']):.2f} % ({np.mean(pv['cand']) - np.mean(pv['base']):+.2f} pp). "
              f"PBC test (not in the rules): {np.mean(pt['base']):.2f} -> {np.mean(pt['cand']):.2f} % "
              f"({np.mean(pt['cand']) - np.mean(pt['base']):+.2f} pp).",
              "Tecom: balanced accuracy over EO/LY/MO/NE; CellaVision: over the classes present; mean ± sd over the seeds."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
