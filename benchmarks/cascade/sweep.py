"""The cascade's margin sweep (issue 32): int8 -> float16 re-run below a margin, agreement with float32.

    .venv/bin/python benchmarks/cascade/sweep.py --export export --split-manifest export/reference/split.csv \
        --pbc ../shared/data/pbc --domain Tecom=../shared/data/zheng2018_tecom \
        --domain CellaVision=../shared/data/zheng2018_cellavision --domain LISC=../shared/data/lisc \
        --out benchmarks/cascade

Selection (RULE.md, written first) reads PBC val and shifted PBC val only; every other set is reported.
Each file's probabilities are computed once per image; the cascade at each margin is then the same choice
`Classifier.predict_pixels` makes (checked against the real cascade on one set at the chosen margin).
Writes results.json, results.md and sweep.png into --out.  Runtime-only: no TensorFlow.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from wbc_edge.core.atomic import write_json, write_text
from wbc_edge.data.augment import shifted_val_view
from wbc_edge.data import SplitManifest, scan_dataset
from wbc_edge.core.preprocess import preprocess
from wbc_edge.runtime import Classifier
from wbc_edge.runtime.classifier import margins
from wbc_edge.core.scale_guard import guard_pixels

GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RULE = {"pbc_val": 99.8, "pbc_val_shifted": 99.0}


def pixels(paths, size, guard, shifted=False):
    out = []
    for i, p in enumerate(paths):
        x = preprocess(p, size)
        if shifted:
            x = shifted_val_view(x, i)
        out.append(guard_pixels(x, guard)[0])
    return np.stack(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--export", default="export")
    ap.add_argument("--split-manifest", required=True)
    ap.add_argument("--pbc", required=True)
    ap.add_argument("--domain", action="append", default=[], metavar="NAME=ROOT")
    ap.add_argument("--timing-images", type=int, default=200)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    exp = Path(a.export)
    i8, f16, f32 = (Classifier(exp / f"wbc_{v}.tflite", num_threads=2) for v in ("int8", "float16", "float32"))
    size, guard = i8.input_size, i8.scale_guard
    man = SplitManifest.load(a.split_manifest)
    sets = {}
    for split in ("val", "test"):
        paths, _ = man.files(split, a.pbc)
        sets[f"pbc_{split}"] = [str(p) for p in paths]
    domains = {"pbc_val": (sets["pbc_val"], False), "pbc_val_shifted": (sets["pbc_val"], True),
               "pbc_test": (sets["pbc_test"], False)}
    for spec in a.domain:
        name, root = spec.split("=", 1)
        scan = scan_dataset(root, progress=False)
        domains[name] = (scan.files()[0], False)
    result = {"files": {v: str(c.model_path) for v, c in (("int8", i8), ("float16", f16), ("float32", f32))},
              "grid": list(GRID), "rule": RULE, "domains": {}}
    probs = {}
    for name, (paths, shifted) in domains.items():
        t = time.time()
        px = pixels(paths, size, guard, shifted)
        p8, p16, p32 = (c.predict_pixels(px) for c in (i8, f16, f32))
        probs[name] = (px, p8, p16, p32)
        m8 = margins(i8.calibrated(p8))
        ref = p32.argmax(1)
        rows = []
        for m in GRID:
            rerun = m8 < m
            pred = np.where(rerun, p16.argmax(1), p8.argmax(1))
            rows.append({"margin": m, "rerun_pct": 100 * float(rerun.mean()),
                         "agreement_pct": 100 * float(np.mean(pred == ref))})
        result["domains"][name] = {"n": len(paths), "int8_agreement_pct": 100 * float(np.mean(p8.argmax(1) == ref)),
                                   "float16_agreement_pct": 100 * float(np.mean(p16.argmax(1) == ref)),
                                   "sweep": rows, "selection": name in RULE}
        print(f"{name}: {len(paths)} images, {time.time() - t:.0f} s", flush=True)

    def ok(m):
        return all(next(r for r in result["domains"][d]["sweep"] if r["margin"] == m)["agreement_pct"] >= need
                   for d, need in RULE.items())
    chosen = next((m for m in GRID if ok(m)), GRID[-1])
    result["chosen_margin"] = chosen

    # The real cascade at the chosen margin gives what the sweep simulated (on PBC test), and its latency.
    casc = Classifier(exp / "wbc_int8.tflite", num_threads=2, fallback=exp / "wbc_float16.tflite",
                      fallback_margin=chosen)
    px, p8, p16, _ = probs["pbc_test"]
    real = casc.predict_pixels(px)
    m8 = margins(i8.calibrated(p8))
    assert np.array_equal(real.argmax(1), np.where(m8 < chosen, p16.argmax(1), p8.argmax(1)))
    for name, (px, *_rest) in probs.items():
        n = min(len(px), a.timing_images)
        t_i8, t_c = [], []
        for i in range(n):
            t0 = time.perf_counter()
            i8.predict_pixels(px[i:i + 1])
            t_i8.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            casc.predict_pixels(px[i:i + 1])
            t_c.append(time.perf_counter() - t0)
        result["domains"][name]["latency_ms"] = {
            "images": n, "threads": 2,
            "int8_p50": 1e3 * float(np.percentile(t_i8, 50)), "int8_p90": 1e3 * float(np.percentile(t_i8, 90)),
            "cascade_p50": 1e3 * float(np.percentile(t_c, 50)), "cascade_p90": 1e3 * float(np.percentile(t_c, 90))}
    out = Path(a.out)
    write_json(out / "results.json", result)
    write_text(out / "results.md", to_markdown(result))
    try:
        plot(result, out / "sweep.png")
    except Exception as exc:  # noqa: BLE001 - no matplotlib: the numbers are written anyway
        print(f"no plot: {exc}")
    print(to_markdown(result))


def to_markdown(r: dict) -> str:
    m = r["chosen_margin"]
    lines = ["# Cascade margin sweep: int8 -> float16 below the margin, agreement with float32", "",
             f"Files: {', '.join(f'{k} `{v}`' for k, v in r['files'].items())}. Rule (RULE.md): the smallest margin "
             f"with >= {r['rule']['pbc_val']} % agreement on PBC val and >= {r['rule']['pbc_val_shifted']} % on "
             f"shifted PBC val. **Chosen: {m}.** Only the two selection sets chose it; the rest are reported.", "",
             "| set | n | int8 alone | float16 alone | cascade at chosen margin (re-run %) | p50 / p90 ms int8 -> cascade (2 thr) |",
             "|---|---:|---:|---:|---:|---|"]
    for name, d in r["domains"].items():
        row = next(x for x in d["sweep"] if x["margin"] == m)
        lat = d.get("latency_ms")
        lat_s = "-" if not lat else (f"{lat['int8_p50']:.2f} / {lat['int8_p90']:.2f} -> "
                                     f"{lat['cascade_p50']:.2f} / {lat['cascade_p90']:.2f}")
        lines.append(f"| {name}{' (selection)' if d['selection'] else ''} | {d['n']} | {d['int8_agreement_pct']:.2f} | "
                     f"{d['float16_agreement_pct']:.2f} | {row['agreement_pct']:.2f} ({row['rerun_pct']:.1f}) | {lat_s} |")
    lines += ["", "Agreement with float32 % (share re-run %) at each margin:", "",
              "| set | " + " | ".join(str(g) for g in r["grid"]) + " |", "|---|" + "---:|" * len(r["grid"])]
    for name, d in r["domains"].items():
        lines.append(f"| {name} | " + " | ".join(f"{x['agreement_pct']:.2f} ({x['rerun_pct']:.0f})" for x in d["sweep"])
                     + " |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    from wbc_edge.metrics import pyplot
    from wbc_edge.metrics.plots import save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, d in r["domains"].items():
        ax.plot([x["rerun_pct"] for x in d["sweep"]], [x["agreement_pct"] for x in d["sweep"]], "o-", ms=3,
                label=name + (" (selection)" if d["selection"] else ""))
    ax.axhline(99, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("% of images re-run in float16")
    ax.set_ylabel("agreement with float32 %")
    ax.set_title(f"int8 -> float16 cascade, margins {r['grid'][0]}-{r['grid'][-1]} (chosen {r['chosen_margin']})",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_png(fig, path)


if __name__ == "__main__":
    main()
