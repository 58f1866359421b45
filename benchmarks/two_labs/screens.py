"""The two-lab method screens judged by their rule (SCREENS_RULE.md, written before the runs).

    .venv/bin/python benchmarks/two_labs/screens.py --baseline runs/two_labs/s3 \
        --screen dsu=runs/two_labs/dsu_s3 --screen mixstyle=runs/two_labs/mixstyle_s3 --out benchmarks/two_labs/screens

The verdict uses each run's own run.json only (per-lab val metrics, written by `wbc-edge train`): score = mean of
PBC val and LISC val balanced accuracy; a screen passes at >= +0.5 pp over the baseline with PBC val balanced
accuracy at most 0.3 pp below.  The reported columns (PBC test, LISC held-out, Tecom, CellaVision) come from the
leave-one-lab-out records `report.py --out DIR` wrote for the same runs (DIR/runs/<run>_<sha>.json) and never
enter the verdict.  Writes screens.json and screens.md into --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wbc_edge.core.atomic import write_json, write_text

PASS_PP = 0.5
MAX_PBC_DROP_PP = 0.3


def val_score(run: Path) -> dict:
    info = json.loads((run / "run.json").read_text())
    src = info["sources"]
    pbc, lisc = src["pbc"]["val"]["balanced_accuracy"], src["lisc"]["val"]["balanced_accuracy"]
    return {"pbc_val": 100 * pbc, "lisc_val": 100 * lisc, "score": 100 * (pbc + lisc) / 2,
            "model_sha256": info["model_sha256"], "config": {k: info["config"].get(k) for k in
                                                             ("seed", "feature_style", "style_mix", "consistency")}}


def reported(run: Path, records: Path) -> dict | None:
    """The leave-one-lab-out record of this run's model, when report.py has scored it."""
    sha = json.loads((run / "run.json").read_text())["model_sha256"][:12]
    path = records / f"{run.name}_{sha}.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text())["sets"]
    return {"PBC test acc": 100 * s["PBC test"]["accuracy"], "LISC held-out": 100 * s["LISC held-out"]["balanced_accuracy"],
            "Tecom EO/LY/MO/NE": 100 * s["Tecom"]["balanced_accuracy_big_classes"],
            "CellaVision": 100 * s["CellaVision"]["balanced_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--screen", action="append", default=[], metavar="NAME=RUN_DIR")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    base = val_score(Path(a.baseline))
    rows = [{"name": "baseline", "run": a.baseline, **base, "reported": reported(Path(a.baseline), out / "runs")}]
    for item in a.screen:
        name, run = item.split("=", 1)
        if not (Path(run) / "run.json").is_file():
            rows.append({"name": name, "run": run, "verdict": "not finished"})
            continue
        sc = val_score(Path(run))
        gain, pbc_drop = sc["score"] - base["score"], base["pbc_val"] - sc["pbc_val"]
        verdict = "pass" if gain >= PASS_PP and pbc_drop <= MAX_PBC_DROP_PP else "fail"
        rows.append({"name": name, "run": run, **sc, "gain_pp": gain, "pbc_val_drop_pp": pbc_drop,
                     "verdict": verdict, "reported": reported(Path(run), out / "runs")})
    write_json(out / "screens.json", {"rule": "benchmarks/two_labs/SCREENS_RULE.md", "pass_pp": PASS_PP,
                                      "max_pbc_drop_pp": MAX_PBC_DROP_PP, "rows": rows})
    cols = ("PBC test acc", "LISC held-out", "Tecom EO/LY/MO/NE", "CellaVision")
    lines = ["# Two-lab method screens (seed 3; rule: SCREENS_RULE.md)", "",
             "Verdict from the runs' own val metrics only (score = mean of PBC val and LISC val balanced accuracy; "
             f"pass: >= +{PASS_PP} pp and PBC val at most {MAX_PBC_DROP_PP} pp lower). The last four columns are "
             "reported, never used to decide (balanced accuracy %, PBC test: accuracy %).", "",
             "| screen | run | PBC val bal. | LISC val bal. | score | vs baseline | verdict | " + " | ".join(cols) + " |",
             "|---|---|---:|---:|---:|---:|---|" + "---:|" * len(cols)]
    for r in rows:
        if "score" not in r:
            lines.append(f"| {r['name']} | `{r['run']}` | | | | | {r['verdict']} |" + " |" * len(cols))
            continue
        rep = r.get("reported") or {}
        lines.append(f"| {r['name']} | `{r['run']}` | {r['pbc_val']:.2f} | {r['lisc_val']:.2f} | {r['score']:.2f} | "
                     + (f"{r['gain_pp']:+.2f} pp | {r['verdict']}" if "gain_pp" in r else "- | -") + " | "
                     + " | ".join(f"{rep[c]:.1f}" if c in rep else "-" for c in cols) + " |")
    write_text(out / "screens.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
