"""The table people choose a model from (issue 33): per model family member and variant - file size, MACs,
x86 1- and 2-thread p50/p90, PBC test accuracy, Tecom (EO/LY/MO/NE) and CellaVision balanced accuracy, and
top-1 agreement with its own float32 and with the teacher's float32.

    .venv/bin/python benchmarks/small/table.py --model teacher=export --model s128_kd=runs/small/s128_kd_s3/export \
        --pbc ../shared/data/pbc --split-manifest export/reference/split.csv \
        --domain Tecom=../shared/data/zheng2018_tecom --domain CellaVision=../shared/data/zheng2018_cellavision \
        --out benchmarks/small/results

Every model must have been trained on the same split (the teacher's): the PBC test images are then unseen by
all of them.  Each folder is an export dir (wbc_<variant>.tflite + contract); the first --model is the
teacher.  Runtime only (numpy, Pillow, LiteRT): the pixels are what `wbc-edge predict` feeds.  Writes
table.json, table.md and pareto.png into --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from wbc_edge.core.atomic import write_json, write_text
from wbc_edge.data import SplitManifest, scan_dataset
from wbc_edge.core.labels import Labels
from wbc_edge.runtime import Classifier

VARIANTS = ("float32", "float16", "int8")
#: Classes with fewer images in a set are left out of its balanced accuracy (Tecom has one basophil).
MIN_CLASS = 10


def macs(path: Path) -> int:
    """Multiply-accumulates of one inference, from the interpreter's op list and tensor shapes."""
    from wbc_edge.runtime.backend import load_backend

    it = load_backend().interpreter_cls(model_path=str(path))
    it.allocate_tensors()
    shapes = {t["index"]: t["shape"] for t in it.get_tensor_details()}
    total = 0
    for op in it._get_ops_details():  # noqa: SLF001 - the public API has no op list
        name, ins, outs = op["op_name"], op["inputs"], op["outputs"]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(ins) < 2:
            continue
        out, w = shapes[outs[0]], shapes[ins[1]]
        if name == "CONV_2D":  # w: (out_c, kh, kw, in_c)
            total += int(np.prod(out[1:3])) * int(np.prod(w))
        elif name == "DEPTHWISE_CONV_2D":  # w: (1, kh, kw, out_c)
            total += int(np.prod(out[1:3])) * int(np.prod(w))
        else:  # w: (out, in)
            total += int(np.prod(w))
    return total


def balanced(pred, y, n_classes):
    present = [c for c in range(n_classes) if np.sum(y == c) >= MIN_CLASS]
    return 100 * float(np.mean([np.mean(pred[y == c] == c) for c in present])), present


def timing(clf: Classifier, px, runs: int):
    t = []
    for i in range(runs):
        t0 = time.perf_counter()
        clf.predict_pixels(px[i % len(px)][None])
        t.append(time.perf_counter() - t0)
    return 1e3 * float(np.percentile(t, 50)), 1e3 * float(np.percentile(t, 90))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="NAME=EXPORT_DIR")
    ap.add_argument("--pbc", required=True)
    ap.add_argument("--split-manifest", required=True)
    ap.add_argument("--domain", action="append", default=[], metavar="NAME=ROOT")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    models = [tuple(m.split("=", 1)) for m in a.model]
    teacher_f32 = Classifier(Path(models[0][1]) / "wbc_float32.tflite", num_threads=2)
    labels = Labels.from_list(teacher_f32.labels)
    paths, y = SplitManifest.load(a.split_manifest, labels=labels).files("test", a.pbc, labels=labels)
    sets = {"PBC test": (paths, np.asarray(y))}
    for spec in a.domain:
        name, root = spec.split("=", 1)
        files, yy = scan_dataset(root, progress=False).files(labels=labels)
        sets[name] = (files, np.asarray(yy))
    res = {"models": {}, "sets": {k: len(v[0]) for k, v in sets.items()}, "min_class_images": MIN_CLASS}
    teacher_pred = {}
    for mname, folder in models:
        for v in VARIANTS:
            f = Path(folder) / f"wbc_{v}.tflite"
            if not f.is_file():
                continue
            clf = Classifier(f, num_threads=2, fallback=None)
            own = Classifier(Path(folder) / "wbc_float32.tflite", num_threads=2, fallback=None)
            row = {"file": str(f), "mb": f.stat().st_size / 1e6, "macs_m": macs(f) / 1e6,
                   "input_size": clf.input_size, "sets": {}}
            t = time.time()
            timing_px = None
            for sname, (files, yy) in sets.items():
                px = np.stack([clf.prepare(p)[0] for p in files])
                timing_px = px if timing_px is None else timing_px
                pred = clf.predict_pixels(px).argmax(1)
                own_pred = own.predict_pixels(px).argmax(1)
                if mname == models[0][0] and v == "float32":
                    teacher_pred[sname] = pred
                tp = teacher_pred.get(sname)
                ba, present = balanced(pred, yy, len(labels))
                row["sets"][sname] = {"accuracy_pct": 100 * float(np.mean(pred == yy)), "balanced_accuracy_pct": ba,
                                      "classes": [labels[c] for c in present],
                                      "agreement_own_float32_pct": 100 * float(np.mean(pred == own_pred)),
                                      "agreement_teacher_pct": None if tp is None else 100 * float(np.mean(pred == tp))}
            for threads in (1, 2):
                c = Classifier(f, num_threads=threads, fallback=None)
                c.predict_pixels(timing_px[:1])
                row[f"p50_ms_{threads}t"], row[f"p90_ms_{threads}t"] = timing(c, timing_px, a.runs)
            res["models"].setdefault(mname, {})[v] = row
            print(f"{mname} {v}: {row['mb']:.2f} MB, {row['macs_m']:.0f} M MACs, p50 1t {row['p50_ms_1t']:.2f} ms, "
                  + ", ".join(f"{s} {r['balanced_accuracy_pct']:.1f}" for s, r in row["sets"].items())
                  + f" ({time.time() - t:.0f} s)", flush=True)
    out = Path(a.out)
    write_json(out / "table.json", res)
    write_text(out / "table.md", to_markdown(res))
    try:
        plot(res, out / "pareto.png")
    except Exception as exc:  # noqa: BLE001 - no matplotlib: the numbers are written anyway
        print(f"no plot: {exc}")
    print(to_markdown(res))


def to_markdown(r: dict) -> str:
    sets = list(r["sets"])
    lines = ["# Model family: size, speed and accuracy (teacher first)", "",
             f"Balanced accuracy over classes with >= {r['min_class_images']} images in the set. Agreement: top-1 "
             "with the model's own float32 / with the teacher's float32. Latency: one image, x86 host of this record.",
             "", "| model | variant | px | MB | M MACs | p50 / p90 ms 1 thr | p50 ms 2 thr | "
             + " | ".join(f"{s} bal. acc % (agree own / teacher)" for s in sets) + " |",
             "|---|---|---:|---:|---:|---|---:|" + "---|" * len(sets)]
    for m, vs in r["models"].items():
        for v, row in vs.items():
            cells = []
            for s in sets:
                c = row["sets"][s]
                t = "-" if c["agreement_teacher_pct"] is None else f"{c['agreement_teacher_pct']:.1f}"
                cells.append(f"{c['balanced_accuracy_pct']:.1f} ({c['agreement_own_float32_pct']:.1f} / {t})")
            lines.append(f"| {m} | {v} | {row['input_size']} | {row['mb']:.2f} | {row['macs_m']:.0f} | "
                         f"{row['p50_ms_1t']:.2f} / {row['p90_ms_1t']:.2f} | {row['p50_ms_2t']:.2f} | " + " | ".join(cells) + " |")
    lines += seeds_markdown(r)
    return "\n".join(lines) + "\n"


def seeds_markdown(r: dict) -> list[str]:
    """Mean +- sd over the seeds of a student named NAME#SEED (two or more)."""
    groups: dict[str, list[str]] = {}
    for m in r["models"]:
        if "#" in m:
            groups.setdefault(m.split("#", 1)[0], []).append(m)
    out = []
    for g, ms in groups.items():
        if len(ms) < 2:
            continue
        out += ["", f"**{g}: mean +- sd over {len(ms)} seeds** ({', '.join(ms)}):", "",
                "| variant | p50 ms 1 thr | " + " | ".join(f"{s} bal. acc %" for s in r["sets"]) + " | PBC test acc % |",
                "|---|---:|" + "---:|" * len(r["sets"]) + "---:|"]
        for v in r["models"][ms[0]]:
            rows = [r["models"][m][v] for m in ms if v in r["models"][m]]

            def ms_(xs):
                return f"{np.mean(xs):.2f} +- {np.std(xs, ddof=1):.2f}"
            cells = [ms_([x["sets"][s]["balanced_accuracy_pct"] for x in rows]) for s in r["sets"]]
            pbc = next(iter(r["sets"]))
            out.append(f"| {v} | {ms_([x['p50_ms_1t'] for x in rows])} | " + " | ".join(cells)
                       + f" | {ms_([x['sets'][pbc]['accuracy_pct'] for x in rows])} |")
    return out


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(r["sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 4), squeeze=False)
    for ax, s in zip(axes[0], sets):  # noqa: B905
        for m, vs in r["models"].items():
            xs = [row["p50_ms_1t"] for row in vs.values()]
            ys = [row["sets"][s]["balanced_accuracy_pct"] for row in vs.values()]
            ax.plot(xs, ys, "o-", label=m)
            for (v, row), x, yv in zip(vs.items(), xs, ys):  # noqa: B905
                ax.annotate(f"{v} {row['mb']:.1f}MB", (x, yv), fontsize=6)
        ax.set_xlabel("p50 ms, 1 thread")
        ax.set_ylabel("balanced accuracy %")
        ax.set_title(s)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
