"""The unfamiliar-lab gate on every set (issue 32 items 4-5): per image and per 40-cell batch, and what an app
that accepts only confident answers from images the gate does not call far would get.

    .venv/bin/python benchmarks/gate/measure.py --export export --split-manifest export/reference/split.csv \
        --pbc ../shared/data/pbc --domain Tecom=../shared/data/zheng2018_tecom \
        --domain CellaVision=../shared/data/zheng2018_cellavision --domain LISC=../shared/data/lisc --out benchmarks/gate

The thresholds are the gate file's own (wbc_gate.json, fitted on PBC val by RULE.md); nothing here chooses.
Accept/refuse: accepted = calibrated confidence >= the contract's abstain threshold AND not far; answers from
the int8 file with the cascade (float16 below the default margin), as `wbc-edge predict` gives them.  Runtime only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wbc_edge.core.atomic import write_json, write_text
from wbc_edge.data import SplitManifest, scan_dataset
from wbc_edge.runtime import Classifier
from wbc_edge.runtime.gate import LabGate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", default="export")
    ap.add_argument("--split-manifest", required=True)
    ap.add_argument("--pbc", required=True)
    ap.add_argument("--domain", action="append", default=[], metavar="NAME=ROOT")
    ap.add_argument("--batch", type=int, default=40)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--gate-label", help="the gate's path as the record names it (default: EXPORT/gate/wbc_gate.tflite)")
    a = ap.parse_args()
    exp = Path(a.export)
    gate = LabGate(exp / "gate" / "wbc_gate.tflite", num_threads=2)
    casc = Classifier(exp / "wbc_int8.tflite", num_threads=2, fallback=exp / "wbc_float16.tflite")
    f32 = Classifier(exp / "wbc_float32.tflite", num_threads=2)
    paths, y = SplitManifest.load(a.split_manifest).files("test", a.pbc, labels=casc.labels)
    sets = {"PBC test": ([str(p) for p in paths], np.asarray(y))}
    for spec in a.domain:
        name, root = spec.split("=", 1)
        scan = scan_dataset(root, labels=None, progress=False)
        idx = np.array([casc.labels.index(r.label) for r in scan.records])
        sets[name] = (scan.files()[0], idx)
    rng = np.random.default_rng(0)
    result = {"gate": {k: gate.meta[k] for k in ("cut", "val_median", "batch_ratio", "batch_min")},
              "gate_file": a.gate_label or str(exp / "gate" / "wbc_gate.tflite"),
              "batch": a.batch, "draws": a.draws, "abstain_threshold": casc.abstain_threshold, "sets": {}}
    for name, (files, y) in sets.items():
        px = np.stack([casc.prepare(f)[0] for f in files])
        d = gate.distances(px)
        far = gate.far(d)
        pc = casc.calibrated(casc.predict_pixels(px))
        pf = f32.calibrated(f32.predict_pixels(px))
        draws = [rng.choice(len(d), size=min(a.batch, len(d)), replace=False) for _ in range(a.draws)]
        verdicts = [gate.batch(d[i]) for i in draws]
        batches = [v.unfamiliar for v in verdicts]
        row = {"n": len(files), "far_pct": 100 * float(far.mean()), "median_ratio": float(np.median(d) / gate.val_median),
               "batches_flagged_pct": 100 * float(np.mean(batches))}
        for label, p in (("int8+cascade", pc), ("float32", pf)):
            conf, ok = p.max(1), p.argmax(1) == y
            acc_conf = conf >= casc.abstain_threshold
            for rule, accepted in (("confidence", acc_conf), ("confidence+gate", acc_conf & ~far)):
                row[f"{label} {rule}"] = {"accepted_pct": 100 * float(accepted.mean()),
                                          "accepted_and_wrong_pct": 100 * float(np.mean(accepted & ~ok)),
                                          "accepted_accuracy_pct": 100 * float(ok[accepted].mean()) if accepted.any() else None}
            # the one accept/refuse decision (runtime.gate.decide) of an app that reads cells in batches of a.batch
            acc, wrong = [], []
            for i, v in zip(draws, verdicts):  # noqa: B905
                dec = np.array([gate.decide(bool(c), float(x), v) == "accept" for c, x in zip(acc_conf[i], d[i])])  # noqa: B905
                acc.append(dec.mean())
                wrong.append(np.mean(dec & ~ok[i]))
            row[f"{label} decision"] = {"accepted_pct": 100 * float(np.mean(acc)),
                                        "accepted_and_wrong_pct": 100 * float(np.mean(wrong))}
        result["sets"][name] = row
        print(name, {k: v for k, v in row.items() if not isinstance(v, dict)}, flush=True)
    out = Path(a.out)
    write_json(out / "results.json", result)
    write_text(out / "results.md", to_markdown(result))
    print(to_markdown(result))


def to_markdown(r: dict) -> str:
    g = r["gate"]
    lines = ["# The unfamiliar-lab gate on every set", "",
             f"Gate (`{r.get('gate_file', 'export/gate/wbc_gate.tflite')}`, thresholds from `wbc_gate.json`, fitted on PBC val by RULE.md): an image "
             f"is far above distance {g['cut']:.1f}; a batch of >= {g['batch_min']} is an unfamiliar lab when its median "
             f"distance exceeds {g['batch_ratio']:.2f} x the val median ({g['val_median']:.1f}). Batches: {r['draws']} random "
             f"{r['batch']}-cell draws per set. Accepted = calibrated confidence >= {r['abstain_threshold']:.3f} (the "
             "contract's) [and not far]; 'accepted and wrong' is a share of all images. The decision "
             "(`wbc_edge.runtime.gate.decide`, as `predict --gate` and LabGate.kt make it): confident, and the cell's "
             "batch not an unfamiliar lab.", "",
             "| set | n | far % | median / val | 40-cell batches flagged % | int8+cascade: accepted % / accepted & wrong %, confidence only | ... confidence + gate per cell | ... **the decision** (per 40-cell batch) | float32, confidence only |",
             "|---|---:|---:|---:|---:|---|---|---|---|"]
    for name, s in r["sets"].items():
        def cell(key, s=s):
            c = s[key]
            return f"{c['accepted_pct']:.1f} / {c['accepted_and_wrong_pct']:.1f}"
        lines.append(f"| {name} | {s['n']} | {s['far_pct']:.1f} | {s['median_ratio']:.2f} | {s['batches_flagged_pct']:.1f} | "
                     f"{cell('int8+cascade confidence')} | {cell('int8+cascade confidence+gate')} | "
                     f"{cell('int8+cascade decision')} | {cell('float32 confidence')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
