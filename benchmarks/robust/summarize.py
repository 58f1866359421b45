"""Aggregate the recipe runs of run_recipe.sh into one table: mean ± sd over seeds per recipe.

    python benchmarks/robust/summarize.py [RUNS=runs/robust] [--out benchmarks/robust/results] [--keep OLD.json]

Reads RUNS/<recipe>_s<seed>/{run.json, crossdomain/crossdomain.json}; writes results.json + results.md.
A recipe is the run name without its `_s<seed>` (the preset, or run_recipe.sh's NAME for a variant of one).
Recipes are chosen on the selection score (PBC val + shifted val) only; the cross-domain columns are
reported, never tuned on.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

COLUMNS = [  # (key, header, domain prefix, metric)
    ("pbc_acc", "PBC test acc %", "PBC", "accuracy"),
    ("pbc_f1", "PBC macro-F1", "PBC", "macro_f1"),
    ("tecom_big", "Tecom bal. acc EO/LY/MO/NE %", "zheng2018_tecom", "balanced_accuracy_big_classes"),
    ("tecom_all", "Tecom bal. acc all 5 %", "zheng2018_tecom", "balanced_accuracy"),
    ("tecom_f1", "Tecom macro-F1", "zheng2018_tecom", "macro_f1"),
    ("cv_all", "CellaVision bal. acc %", "zheng2018_cellavision", "balanced_accuracy"),
    ("cv_f1", "CellaVision macro-F1", "zheng2018_cellavision", "macro_f1"),
]


def run_row(run: Path) -> dict | None:
    cd = run / "crossdomain" / "crossdomain.json"
    info = run / "run.json"
    if not cd.exists() or not info.exists():
        return None
    report = json.loads(cd.read_text())
    meta = json.loads(info.read_text())
    selected = meta["timings"].get("selected", {})
    row = {"run": run.name, "seed": meta["config"]["seed"], "recipe": re.sub(r"_s\d+$", "", run.name),
           "preset": meta["config"].get("aug_preset", "basic"), "finetune_from": meta["config"].get("finetune_from"),
           "train_min": meta["timings"]["total_s"] / 60, "selected": selected, "select": selected.get("select")}
    for key, _, prefix, metric in COLUMNS:
        dom = next(d for d in report["domains"] if d["name"].startswith(prefix))
        res = next(iter(dom["results"].values()))
        scale = 1 if "f1" in key else 100
        row[key] = None if res[metric] is None else res[metric] * scale
    return row


def fmt(values: list[float], f1: bool) -> str:
    if not values:
        return "-"
    m = statistics.mean(values)
    if len(values) == 1:
        return f"{m:.3f}" if f1 else f"{m:.1f}"
    sd = statistics.stdev(values)
    return f"{m:.3f} ± {sd:.3f}" if f1 else f"{m:.1f} ± {sd:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="?", default="runs/robust")
    ap.add_argument("--out", default="benchmarks/robust/results")
    ap.add_argument("--keep", metavar="SUMMARY.json",
                    help="also list the runs of an earlier summary (e.g. the committed ablation.json) that RUNS "
                         "does not hold: run directories are not committed, so a later variant would otherwise "
                         "drop the recorded rows.  A run in RUNS replaces the recorded one of the same name.")
    args = ap.parse_args()
    rows = [r for p in sorted(Path(args.runs).glob("*_s*")) if p.is_dir() and re.search(r"_s\d+$", p.name)
            for r in [run_row(p)] if r]
    if args.keep:
        fresh = {r["run"] for r in rows}
        kept = [r for r in json.loads(Path(args.keep).read_text())["runs"] if r["run"] not in fresh]
        rows = sorted(kept + rows, key=lambda r: r["run"])
    by_recipe: dict[str, list[dict]] = {}
    for r in rows:
        by_recipe.setdefault(r["recipe"], []).append(r)
    head = " | ".join(h for _, h, _, _ in COLUMNS) + " | selection score | train min |"
    lines = ["| recipe | seeds | " + head, "|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    for recipe, rs in by_recipe.items():
        cells = [fmt([r[k] for r in rs if r[k] is not None], "f1" in k) for k, _, _, _ in COLUMNS]
        cells.append(fmt([r["select"] for r in rs if r["select"] is not None], True))
        lines.append(f"| {recipe} | {', '.join(str(r['seed']) for r in rs)} | " + " | ".join(cells)
                     + f" | {fmt([r['train_min'] for r in rs], False)} |")
    lines += ["", "Per run:", "", "| run | " + head, "|---|" + "---:|" * (len(COLUMNS) + 2)]
    for r in rows:
        cells = [fmt([r[k]] if r[k] is not None else [], "f1" in k) for k, _, _, _ in COLUMNS]
        cells.append(fmt([r["select"]] if r["select"] is not None else [], True))
        lines.append(f"| {r['run']} | " + " | ".join(cells) + f" | {r['train_min']:.1f} |")
    md = "\n".join(lines) + "\n"
    Path(args.out + ".md").write_text(md)
    Path(args.out + ".json").write_text(json.dumps({"runs": rows}, indent=2))
    print(md)


if __name__ == "__main__":
    main()
