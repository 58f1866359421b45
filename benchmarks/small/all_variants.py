"""Every export variant of a student, from its export manifest (issue 33 item 2): size, parity on PBC test and
agreement with the student's own Keras model on the other labs, gate verdict.

    .venv/bin/python benchmarks/small/all_variants.py runs/small/s128_kd_s3/export_all/manifest.json \
        --out benchmarks/small/results/all_variants
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wbc_edge.core.atomic import write_json, write_text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest")
    ap.add_argument("--out", required=True, help="path without suffix: .json and .md are written")
    a = ap.parse_args()
    m = json.loads(Path(a.manifest).read_text())
    doms = list(m.get("parity_domains", {}))
    rows = []
    for e in m["variants"]:
        p = e.get("parity") or {}
        rows.append({"variant": e["variant"], "status": e["status"], "mb": e.get("bytes", 0) / 1e6,
                     "sha256": e.get("sha256"), "pbc_accuracy": p.get("accuracy"), "pbc_agreement": p.get("agreement_pct"),
                     "delta_pp": p.get("delta_accuracy_pp"), "passed": p.get("passed"),
                     "domains": {d: (e.get("parity_domains") or {}).get(d, {}).get("agreement_pct") for d in doms}})
    out = Path(a.out)
    write_json(out.with_suffix(".json"), {"manifest": a.manifest, "source_model": m["source_model"], "rows": rows})
    lines = [f"# Every variant of the student `{m['source_model']['path']}` ({m['source_model']['input_size']} px)", "",
             f"From `{a.manifest}` (a copy: `all_variants_manifest.json`) (`wbc-edge export ... --all`, the same parity gate as the default model). Agreement "
             "= top-1 agreement with the student's own Keras model.", "",
             "| variant | MB | PBC test acc | Δ acc pp | agreement PBC % | " + " | ".join(f"agreement {d} %" for d in doms)
             + " | gate |", "|---|---:|---:|---:|---:|" + "---:|" * len(doms) + "---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['mb']:.2f} | {100 * r['pbc_accuracy']:.2f} | {r['delta_pp']:+.2f} | "
                     f"{r['pbc_agreement']:.2f} | " + " | ".join(f"{r['domains'][d]:.2f}" for d in doms)
                     + f" | {'pass' if r['passed'] else 'FAIL'} |")
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
