"""Leave-one-lab-out report (issue 31): PBC-only vs PBC+LISC runs of the same recipe, on every lab's cells.

    .venv/bin/python benchmarks/two_labs/report.py --shared ../shared --out benchmarks/two_labs \
        --run export/reference runs/two_labs/s3 [more run dirs ...] [--int8 RUN_DIR=INT8.tflite ...]

Per run (one line says what it was trained on, from its run.json): PBC test (its own split's PBC test cells),
LISC (its held-out LISC test cells when it trained on LISC; all of LISC when it did not), Tecom (EO/LY/MO/NE
= classes with >= 10 images, and all 5) and CellaVision: balanced accuracy and per-class recall, through
`wbc_edge.bench.crossdomain` (the one preprocessing path and each run's scale guard).  With --int8, that file's
top-1 agreement with its run's Keras model on every set too.  Then mean +- sd per training set over the runs.
Writes report.json, report.md and report.png into --out.  Tecom and CellaVision are reported, never selected on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from wbc_edge.core.atomic import write_json, write_text
from wbc_edge.bench.crossdomain import CrossDomainConfig, Domain, run_report
from wbc_edge.data import SplitManifest, source_of

SETS = ("PBC test", "LISC held-out", "Tecom", "CellaVision")
#: LISC's held-out cells: its own split with this seed (the multi-source runs use --split-seed 42), so every
#: run, trained on LISC or not, is scored on the same 244 crops of cells none of them trained on.
LISC_SPLIT_SEED = 42


def trained_on(run: Path) -> tuple[str, dict]:
    info = json.loads((run / "run.json").read_text())
    cfg = info["config"]
    srcs = cfg.get("sources") or [{"name": Path(cfg["data_root"]).name, "root": cfg["data_root"]}]
    return "+".join(s["name"].upper() if s["name"] in ("pbc", "lisc") else s["name"] for s in srcs), info


def domains_for(run: Path, info: dict, shared: Path, tmp: Path) -> list[Domain]:
    cfg = info["config"]
    split = SplitManifest.load(run / "split.csv")
    out = []
    if cfg.get("sources"):
        root = run / "sources"
        for name, label in (("pbc", "PBC test"), ("lisc", "LISC held-out")):
            rows = [r for r in split.rows if source_of(r.path) == name]
            part = tmp / f"{run.name}_{name}.csv"
            SplitManifest(rows).save(part)
            out.append(Domain(str(root), name=label, split_manifest=str(part), split="test"))
    else:
        from wbc_edge.data import Source, split_sources
        from wbc_edge.data.manifest import ManifestRow

        lisc = shared / "data" / "lisc"
        held = split_sources([Source("lisc", str(lisc))], seed=LISC_SPLIT_SEED, progress=False).manifest
        part = tmp / "lisc_heldout.csv"
        SplitManifest([ManifestRow(r.path.split("/", 1)[1], *r[1:]) for r in held.rows]).save(part)
        out.append(Domain(cfg["data_root"], name="PBC test", split_manifest=str(run / "split.csv"), split="test"))
        out.append(Domain(str(lisc), name="LISC held-out", split_manifest=str(part), split="test"))
        out.append(Domain(str(lisc), name="LISC all"))
    out.append(Domain(str(shared / "data" / "zheng2018_tecom"), name="Tecom"))
    out.append(Domain(str(shared / "data" / "zheng2018_cellavision"), name="CellaVision"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--run", nargs="+", required=True)
    ap.add_argument("--int8", action="append", default=[], metavar="RUN_DIR=FILE")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    int8 = dict(s.split("=", 1) for s in a.int8)
    rows = []
    per_run = Path(a.out) / "runs"
    with tempfile.TemporaryDirectory() as tmp:
        for r in a.run:
            run = Path(r)
            name, info = trained_on(run)
            cached = per_run / f"{run.name}_{info['model_sha256'][:12]}.json"
            if cached.is_file() and r not in int8:  # this model scored before: its record (one per model file)
                rows.append(json.loads(cached.read_text()))
                continue
            models = [str(run / "model.keras")] + ([int8[r]] if r in int8 else [])
            res = run_report(CrossDomainConfig(models=models, domains=domains_for(run, info, Path(a.shared), Path(tmp)),
                                               reference=str(run / "model.keras")))
            row = {"run": r, "trained_on": name, "seed": info["config"]["seed"], "sets": {}}
            for d in res["domains"]:
                k = d["results"][str(run / "model.keras")]
                row["sets"][d["name"]] = {
                    "n": d["n"], "accuracy": k["accuracy"], "balanced_accuracy": k["balanced_accuracy"],
                    "balanced_accuracy_big_classes": k.get("balanced_accuracy_big_classes"),
                    "big_classes": k.get("big_classes"), "recall": k.get("per_class_recall"),
                    "int8_agreement_pct": (d["results"][int8[r]]["agreement_pct"] if r in int8 else None)}
            rows.append(row)
            write_json(cached, row)
            print(f"{r}: {name} seed {row['seed']}: " + ", ".join(
                f"{s} {100 * row['sets'][s]['balanced_accuracy']:.1f}" for s in SETS if s in row["sets"]), flush=True)
    summary = {}
    for name in sorted({r["trained_on"] for r in rows}):
        mine = [r for r in rows if r["trained_on"] == name]
        summary[name] = {"runs": len(mine)}
        for s in SETS:
            for key in ("accuracy", "balanced_accuracy", "balanced_accuracy_big_classes"):
                vals = [r["sets"][s][key] for r in mine if s in r["sets"] and r["sets"][s][key] is not None]
                if vals:
                    summary[name][f"{s}/{key}"] = {"mean": float(np.mean(vals)),
                                                   "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}
    result = {"runs": rows, "summary": summary}
    out = Path(a.out)
    write_json(out / "report.json", result)
    write_text(out / "report.md", to_markdown(result))
    try:
        plot(result, out / "report.png")
    except Exception as exc:  # noqa: BLE001 - no matplotlib: numbers only
        print(f"no plot: {exc}")
    print(to_markdown(result))


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def to_markdown(r: dict) -> str:
    lines = ["# Leave-one-lab-out: PBC-only vs PBC+LISC (balanced accuracy %)", "",
             "LISC held-out: the 244 crops of LISC's own seed-42 split (by cell group) that no run trained on; "
             "in brackets, for runs that never saw LISC, all 1,218 crops. Tecom: EO/LY/MO/NE (classes with >= 10 "
             "images) / all 5. Recall per class in report.json.", "",
             "| run | trained on | seed | PBC test acc / bal. | LISC held-out (all) | Tecom EO/LY/MO/NE | Tecom all 5 | CellaVision | int8 agreement PBC / LISC / Tecom / CV % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in r["runs"]:
        s = row["sets"]
        agree = " / ".join("-" if s[k]["int8_agreement_pct"] is None else f"{s[k]['int8_agreement_pct']:.1f}" for k in SETS)
        every = f" ({_fmt(s['LISC all']['balanced_accuracy'])})" if "LISC all" in s else ""
        lines.append(f"| `{row['run']}` | {row['trained_on']} | {row['seed']} | {_fmt(s['PBC test']['accuracy'])} / "
                     f"{_fmt(s['PBC test']['balanced_accuracy'])} | "
                     f"{_fmt(s['LISC held-out']['balanced_accuracy'])}{every} | "
                     f"{_fmt(s['Tecom']['balanced_accuracy_big_classes'])} | {_fmt(s['Tecom']['balanced_accuracy'])} | "
                     f"{_fmt(s['CellaVision']['balanced_accuracy'])} | {agree} |")
    lines += ["", "Mean +- sd over runs (sd needs >= 2 runs):", "",
              "| trained on | runs | PBC test acc | LISC held-out | Tecom EO/LY/MO/NE | CellaVision |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in r["summary"].items():
        def cell(key, m=m):
            v = m.get(key)
            return "-" if not v else f"{100 * v['mean']:.1f}" + ("" if v["sd"] is None else f" +- {100 * v['sd']:.1f}")
        lines.append(f"| {name} | {m['runs']} | {cell('PBC test/accuracy')} | {cell('LISC held-out/balanced_accuracy')} | "
                     f"{cell('Tecom/balanced_accuracy_big_classes')} | {cell('CellaVision/balanced_accuracy')} |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    from wbc_edge.metrics import pyplot
    from wbc_edge.metrics.plots import save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    names = sorted({row["trained_on"] for row in r["runs"]})
    x = np.arange(len(SETS))
    w = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        for j, row in enumerate(rr for rr in r["runs"] if rr["trained_on"] == name):
            vals = [100 * (row["sets"][s]["balanced_accuracy_big_classes"] if s == "Tecom" else
                           row["sets"][s]["balanced_accuracy"]) for s in SETS]
            ax.scatter(x + i * w - 0.4 + w / 2, vals, color=f"C{i}", label=name if j == 0 else None, s=25)
    ax.set_xticks(x, [s + (" (EO/LY/MO/NE)" if s == "Tecom" else "") for s in SETS])
    ax.set_ylabel("balanced accuracy %")
    ax.set_title("Leave-one-lab-out: each dot a run (seed)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    save_png(fig, path)


if __name__ == "__main__":
    main()
