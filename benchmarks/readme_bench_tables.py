"""Write the generated bench tables of README.md, docs/RESULTS.md and benchmarks/README.md from a recorded
`wbc-edge bench` JSON.

    .venv/bin/python benchmarks/readme_bench_tables.py [RECORD.json]           # rewrite the blocks
    .venv/bin/python benchmarks/readme_bench_tables.py [RECORD.json] --check   # exit 1 if one is stale

RECORD defaults to the shipped files' record, benchmarks/results/x86_64_amd-epyc_2cpu/shipped_2026-12-07/pbc_test.json.

Why: the tables quote a record (sizes, PBC test accuracy, agreement on PBC test and on every --domain set, p50
latencies, the ratios between them); typed by hand they drift from the file after a re-record. Each target file
holds its table between `<!-- generated: bench (benchmarks/readme_bench_tables.py; do not edit by hand) -->` and
`<!-- end: bench -->`; this script replaces what is between them:

- README.md: the headline table (the Keras reference, float32, float16 and the default int8 file);
- docs/RESULTS.md: the full table of every shipped variant, with each file's description;
- benchmarks/README.md: the full table in the bench's own columns (ΔAcc, one column per domain).

`--check` writes nothing: it names every target whose block differs from what the record gives now (or that has
no block) and exits 1 if there is one. `tests/test_generated_tables.py` runs that check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECORD = REPO / "benchmarks" / "results" / "x86_64_amd-epyc_2cpu" / "shipped_2026-12-07" / "pbc_test.json"
START = "<!-- generated: bench (benchmarks/readme_bench_tables.py; do not edit by hand) -->"
END = "<!-- end: bench -->"
#: table order and docs/RESULTS.md's description of each shipped variant
ORDER = ("float32", "float16", "dynamic", "int8", "int8_plain", "int8_mixed", "qat_int8")
ROOT_NAME = {"int8": "**`wbc_int8.tflite`** (PTQ, 4 ops float, uint8 I/O; the Android bundle)",
             "int8_plain": "`wbc_int8_plain.tflite` (every op int8; the default until 2026-12-07)",
             "int8_mixed": "`wbc_int8_mixed.tflite` (int8, the 8 worst layers float; issue 14)",
             "qat_int8": "`wbc_qat_int8.tflite` (QAT; not recommended)"}
#: the README's headline table: the reference and the three files a newcomer chooses between
HEADLINE = ("float32", "float16", "int8")
HEADLINE_NAME = {"int8": "**`wbc_int8.tflite`** (the default int8; the Android bundle)"}
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


def _variant_table(f: dict, names, name_map: dict, threads: tuple[int, ...]) -> list[str]:
    """The shipped variants `names` (in that order) beside the Keras reference: size, PBC test accuracy,
    agreement with Keras per domain, p50 latency per thread count; the default int8 in bold."""
    doms = ["PBC"] + f["domains"]
    lat = [f"p50 ms, {t} thread{'s' if t > 1 else ''}" for t in threads]
    lines = [f"| Variant | Size MB | PBC test acc | Agreement with Keras, {' / '.join(doms)} | {' | '.join(lat)} |",
             "|---|---:|---:|---|" + "---:|" * len(threads)]
    k = f["rows"]["keras"]
    lines.append(f"| Keras reference (`export/reference/model.keras`) | {k['size_mb']:.2f} | {100 * k['accuracy']:.2f} % "
                 f"| – | " + " | ".join(f"{k['p50'][t]:.1f}" for t in threads) + " |")
    for name in names:
        r = f["rows"].get(name)
        if r is None:
            continue
        cells = [name_map.get(name, f"`wbc_{name}.tflite`"), f"{r['size_mb']:.2f}", f"{100 * r['accuracy']:.2f} %",
                 " / ".join(_agree(r["agree"].get(d)) for d in doms) + " %", *(f"{r['p50'][t]:.2f}" for t in threads)]
        if name == BOLD:
            cells = [cells[0]] + [f"**{c}**" for c in cells[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def root_table(f: dict) -> list[str]:
    """docs/RESULTS.md: every shipped variant, described."""
    return _variant_table(f, ORDER, ROOT_NAME, (1, 2)) + ["", ratios(f)]


def headline_table(f: dict) -> list[str]:
    """README.md: the reference, float32, float16 and the default int8; 1 thread."""
    return _variant_table(f, HEADLINE, HEADLINE_NAME, (1,)) + ["", ratios(f)]


def bench_table(f: dict) -> list[str]:
    """benchmarks/README.md: every shipped variant in the bench's own columns."""
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


#: (file relative to the repository root, the table written into its block)
TARGETS = (("README.md", headline_table), ("docs/RESULTS.md", root_table), ("benchmarks/README.md", bench_table))


def replace_block(text: str, body: list[str], where: Path | str) -> str:
    """`text` with the block between START and END replaced by `body`; ValueError unless there is exactly one."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{where}: needs exactly one {START} ... {END} block")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return head + START + "\n" + "\n".join(body) + "\n" + END + tail


def render(record: Path = DEFAULT_RECORD, repo: Path = REPO) -> dict[str, tuple[str, str]]:
    """{target: (its text now, its text with the block the record gives)}; ValueError for a target without a block."""
    f = facts(json.loads(Path(record).read_text(encoding="utf-8")))
    out = {}
    for rel, table in TARGETS:
        old = (Path(repo) / rel).read_text(encoding="utf-8")
        out[rel] = (old, replace_block(old, table(f), rel))
    return out


def check(record: Path = DEFAULT_RECORD, repo: Path = REPO) -> list[str]:
    """The targets whose generated block is not what `record` gives now (with the reason); writes nothing."""
    f = facts(json.loads(Path(record).read_text(encoding="utf-8")))
    stale = []
    for rel, table in TARGETS:
        path = Path(repo) / rel
        if not path.is_file():
            stale.append(f"{rel} (missing)")
            continue
        old = path.read_text(encoding="utf-8")
        try:
            new = replace_block(old, table(f), rel)
        except ValueError as e:
            stale.append(f"{rel} ({e})")
            continue
        if new != old:
            stale.append(f"{rel} (block differs from the record)")
    return stale


def write(record: Path = DEFAULT_RECORD, repo: Path = REPO) -> list[str]:
    """Rewrite every target's block from `record`; returns the targets that changed."""
    changed = []
    for rel, (old, new) in render(record, repo).items():
        if new != old:
            (Path(repo) / rel).write_text(new, encoding="utf-8")
            changed.append(rel)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record", type=Path, nargs="?", default=DEFAULT_RECORD,
                    help=f"the bench JSON (wbc-edge bench run --json); default {DEFAULT_RECORD.relative_to(REPO)}")
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if a target's block is not what the record gives")
    args = ap.parse_args(argv)
    if args.check:
        stale = check(args.record)
        print("stale: " + ("; ".join(stale) or "nothing"))
        return 1 if stale else 0
    try:
        changed = write(args.record)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("rewrote: " + (", ".join(changed) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
