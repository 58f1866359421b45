"""Write the bench tables of README.md and benchmarks/README.md from a recorded `wbc-edge bench` JSON.

    .venv/bin/python benchmarks/readme_bench_tables.py benchmarks/results/x86_64_amd-epyc_2cpu/shipped_2026-12-07/pbc_test.json

Why: the tables quote a record (sizes, PBC test accuracy, agreement on PBC test and on every --domain set, p50
latencies, the ratios between them); typed by hand they drift from the file after a re-record. Each README holds
its table between `<!-- generated: bench (benchmarks/readme_bench_tables.py; do not edit by hand) -->` and
`<!-- end: bench -->`; this script replaces what is between them. `--check` only reports whether they are current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = "<!-- generated: bench (benchmarks/readme_bench_tables.py; do not edit by hand) -->"
END = "<!-- end: bench -->"
#: table order and the root README's description of each shipped variant
ORDER = ("float32", "float16", "dynamic", "int8", "int8_plain", "int8_mixed", "qat_int8")
ROOT_NAME = {"int8": "**`wbc_int8.tflite`** (PTQ, 4 ops float, uint8 I/O; the Android bundle)",
             "int8_plain": "`wbc_int8_plain.tflite` (every op int8; the default until 2026-12-07)",
             "int8_mixed": "`wbc_int8_mixed.tflite` (int8, the 8 worst layers float; issue 14)",
             "qat_int8": "`wbc_qat_int8.tflite` (QAT; not recommended)"}
BOLD = "int8"


def _agree(x: float | None) -> str:
    return "–" if x is None else ("100" if x == 100 else f"{x:.2f}")


def facts(record: dict) -> dict:
    """{variant: {size_mb, accuracy, delta_pp, agree: {domain: pct}, p50: {threads: ms}}} and the domain names."""
    rows = {}
    for v in record["variants"]:
        name = v["variant"] if v["kind"] == "tflite" else "keras"
        rows[name] = {"size_mb": v["size_mb"], "accuracy": v["parity"]["accuracy"],
                      "delta_pp": v["parity"].get("delta_accuracy_pp"), "path": v["path"],
                      "agree": {"PBC": None if v["is_reference"] else v["parity"]["agreement_pct"]}, "p50": {}}
    for r in record["rows"]:
        rows[r["variant"]]["p50"][r["threads"]] = r["p50_ms"]
    domains = [d["name"] for d in (record.get("domains") or {}).get("domains", [])]
    for d in (record.get("domains") or {}).get("domains", []):
        for path, res in d["results"].items():
            for row in rows.values():
                if row["path"] == path:
                    row["agree"][d["name"]] = res.get("agreement_pct")
    return {"rows": rows, "domains": domains, "ttfp": {t["path"]: t["wall_s"] for t in record.get("ttfp") or []}}


def ratios(f: dict) -> str:
    r = f["rows"]
    t = f["ttfp"]
    text = (f"Ratios in this record (1 thread, p50): int8 {r['float32']['p50'][1] / r['int8']['p50'][1]:.1f}x faster "
            f"than float32 and {r['keras']['p50'][1] / r['int8']['p50'][1]:.0f}x faster than Keras")
    if "runtime" in t and "keras" in t:
        text += f"; a fresh process gets its first prediction in {t['runtime']:.2f} s with the runtime + int8 " \
                f"against {t['keras']:.1f} s with Keras"
    return text + "."


def root_table(f: dict) -> list[str]:
    doms = ["PBC"] + f["domains"]
    lines = [f"| Variant | Size MB | PBC test acc | Agreement {' / '.join(doms)} | p50 ms, 1 thread | p50 ms, 2 threads |",
             "|---|---:|---:|---|---:|---:|"]
    k = f["rows"]["keras"]
    lines.append(f"| Keras reference (`export/reference/model.keras`) | {k['size_mb']:.2f} | {100 * k['accuracy']:.2f} % | – | "
                 f"{k['p50'][1]:.1f} | {k['p50'][2]:.1f} |")
    for name in ORDER:
        r = f["rows"].get(name)
        if r is None:
            continue
        cells = [ROOT_NAME.get(name, f"`wbc_{name}.tflite`"), f"{r['size_mb']:.2f}", f"{100 * r['accuracy']:.2f} %",
                 " / ".join(_agree(r["agree"].get(d)) for d in doms) + " %", f"{r['p50'][1]:.2f}", f"{r['p50'][2]:.2f}"]
        if name == BOLD:
            cells = [cells[0]] + [f"**{c}**" for c in cells[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", ratios(f)]


def bench_table(f: dict) -> list[str]:
    doms = ["PBC"] + f["domains"]
    lines = ["| Variant | Size MB | Acc | ΔAcc pp | " + " | ".join(f"Agree {d}" for d in doms)
             + " | p50 ms 1 thr | p50 ms 2 thr |", "|---|---|---|---|" + "---|" * len(doms) + "---|---|"]
    k = f["rows"]["keras"]
    lines.append(f"| Keras reference | {k['size_mb']:.2f} | {100 * k['accuracy']:.2f} % | ref | "
                 + " | ".join("ref" for _ in doms) + f" | {k['p50'][1]:.2f} | {k['p50'][2]:.2f} |")
    for name in ORDER:
        r = f["rows"].get(name)
        if r is None:
            continue
        cells = [name if name != BOLD else "int8 (PTQ, 4 ops float)", f"{r['size_mb']:.2f}", f"{100 * r['accuracy']:.2f} %",
                 f"{r['delta_pp']:+.2f}"] + [f"{r['agree'][d]:.2f} %" for d in doms] \
            + [f"{r['p50'][1]:.2f}", f"{r['p50'][2]:.2f}"]
        if name == BOLD:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + ["", ratios(f)]


def replace_block(text: str, body: list[str], where: Path) -> str:
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"{where}: needs exactly one {START} ... {END} block")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return head + START + "\n" + "\n".join(body) + "\n" + END + tail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record", type=Path, help="the bench JSON (wbc-edge bench run --json)")
    ap.add_argument("--check", action="store_true", help="exit 1 if a README's block is not what the record gives")
    args = ap.parse_args()
    f = facts(json.loads(args.record.read_text()))
    stale = []
    for path, body in ((REPO / "README.md", root_table(f)), (REPO / "benchmarks" / "README.md", bench_table(f))):
        old = path.read_text()
        new = replace_block(old, body, path)
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    print(("stale: " if args.check else "rewrote: ") + (", ".join(str(p.relative_to(REPO)) for p in stale) or "nothing"))
    sys.exit(1 if args.check and stale else 0)


if __name__ == "__main__":
    main()
