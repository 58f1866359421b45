"""Summarise lab_parity.sh: agreement with float32 per variant, the shipped files vs the adapted ones, per seed.

    .venv/bin/python benchmarks/adapt/lab_parity_summary.py RAW_DIR [--manifests M.json ...] [--out PREFIX]

Reads RAW_DIR/{shipped,adapted}_s<seed>.json (`wbc-edge bench --json`) and, optionally, the adapted runs' export
manifests (which variants passed the export's parity gate).  Writes PREFIX.md and PREFIX.json: numbers only, no
image names.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw", type=Path)
    ap.add_argument("--manifests", nargs="*", default=[])
    ap.add_argument("--out", default=str(HERE / "results_s3" / "lab_parity_tecom_k10"))
    args = ap.parse_args()
    rows: dict = {}
    seeds = set()
    for path in sorted(args.raw.glob("*_s*.json")):
        m = re.fullmatch(r"(shipped|adapted)_s(\d+)\.json", path.name)
        if not m:
            continue
        which, seed = m.group(1), int(m.group(2))
        seeds.add(seed)
        for v in json.loads(path.read_text())["variants"]:
            p = v["parity"]
            rows.setdefault((which, v["name"]), {})[seed] = {
                "agreement_pct": p["agreement_pct"], "accuracy": p["accuracy"], "n": p["n"],
                "balanced_accuracy": p["balanced_accuracy"], "size_mb": v["size_mb"]}
    gates = {}
    for mp in args.manifests:
        seed = int(re.search(r"_s(\d+)/", mp).group(1))
        man = json.loads(Path(mp).read_text())
        gates[seed] = {v["variant"]: v["status"] for v in man["variants"]}
    seeds = sorted(seeds)
    n = sorted({r["n"] for per in rows.values() for r in per.values()})
    lines = [f"Tecom as the new lab, k = 10, seeds {seeds}: the test split of each `wbc-edge adapt` run "
             f"(n = {' / '.join(map(str, n))} images per seed, never adapted on). "
             "Agreement = top-1 agreement with the same model's float32 file.", "",
             "| files | variant | size MB | agreement with float32 % (per seed) | mean | accuracy % (mean) |",
             "|---|---|---:|---|---:|---:|"]
    out = {"seeds": seeds, "rows": [], "export_gate": gates}
    for (which, name), per in rows.items():
        ag = [per[s]["agreement_pct"] for s in seeds if s in per]
        acc = [100 * per[s]["accuracy"] for s in seeds if s in per]
        label = "shipped `export/` (not adapted)" if which == "shipped" else "adapted (`runs/lab_tecom_k10_s*/export/`)"
        lines.append(f"| {label} | {name} | {next(iter(per.values()))['size_mb']:.2f} | "
                     f"{' / '.join(f'{a:.1f}' for a in ag)} | {statistics.mean(ag):.1f} | {statistics.mean(acc):.1f} |")
        out["rows"].append({"files": which, "variant": name, "per_seed": per,
                            "agreement_mean": statistics.mean(ag), "accuracy_mean": statistics.mean(acc) / 100})
    if gates:
        lines += ["", "Export parity gate of the adapted runs (agreement >= 98 % on the lab's test split): " + "; ".join(
            f"seed {s}: " + ", ".join(f"{k} {v}" for k, v in g.items()) for s, g in sorted(gates.items()))]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    Path(args.out + ".json").write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
