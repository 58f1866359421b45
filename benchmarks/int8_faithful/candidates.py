"""Which int8 file should ship by default (issue 32 item 2): candidate quantisations of one reference model,
chosen by RULE.md on PBC val + shifted PBC val only; Tecom, CellaVision and LISC are reported.

    .venv/bin/python benchmarks/int8_faithful/candidates.py --reference export/reference \
        --export export --pbc ../shared/data/pbc --domain Tecom=../shared/data/zheng2018_tecom \
        --domain CellaVision=../shared/data/zheng2018_cellavision --domain LISC=../shared/data/lisc \
        --out benchmarks/int8_faithful/results

Every candidate is built from the same SavedModel with the converter export uses (QuantizationDebugger for
the float-fallback ones) and judged against the shipped float32 file on the pixels the runtime feeds (one
preprocessing path + the contract's scale guard).  Candidate files go to --files (not committed).
Writes results.json, results.md and candidates.png into --out.  Needs TensorFlow (the converter).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from wbc_edge.core.atomic import write_bytes, write_json, write_text
from wbc_edge.data.augment import shifted_val_view
from wbc_edge.core.calibration import apply_temperature
from wbc_edge.data import SplitManifest, scan_dataset
from wbc_edge.core.labels import Labels
from wbc_edge.core.preprocess import preprocess
from wbc_edge.runtime import Classifier
from wbc_edge.runtime.backend import load_backend
from wbc_edge.core.scale_guard import guard_pixels

#: Classes with fewer images are left out of balanced accuracy (as crossdomain's --min-class-images).
MIN_CLASS = 5
RULE = {"max_mb": 4.0, "max_latency_ratio": 1.25, "pbc_val_slack_pp": 0.1, "min_gain_pp": 0.5, "tie_pp": 0.2}


def set_pixels(paths, size, guard, shifted=False):
    out = []
    for i, p in enumerate(paths):
        x = preprocess(p, size)
        if shifted:
            x = shifted_val_view(x, i)
        out.append(guard_pixels(x, guard)[0])
    return np.stack(out)


class Raw:
    """A candidate flatbuffer run with the plain interpreter (uint8 in, dequantised probabilities out)."""

    def __init__(self, blob: bytes, threads: int = 2):
        self.it = load_backend().interpreter_cls(model_content=blob, num_threads=threads)
        self.it.allocate_tensors()
        self.i, self.o = self.it.get_input_details()[0], self.it.get_output_details()[0]

    def one(self, x):
        self.it.set_tensor(self.i["index"], x[None].astype(self.i["dtype"]))
        self.it.invoke()
        y = self.it.get_tensor(self.o["index"])[0].astype(np.float32)
        s, z = self.o["quantization"]
        return (y - z) * s if s else y

    def probs(self, px):
        return np.stack([self.one(x) for x in px])


def build(ref_dir: Path, pbc: str, size: int, files: Path) -> dict[str, bytes]:
    from wbc_edge.export.calibration_data import calibration_batch, sample_pixels
    from wbc_edge.export.convert import saved_model
    from wbc_edge.export.layer_error import rank
    from wbc_edge.export.selective import Quantiser, rank_subset, shifted_rank_images
    from wbc_edge.core.atomic import read_json
    from wbc_edge.model.network import load_model

    labels = Labels.from_list(read_json(ref_dir / "run.json", ValueError, missing="missing", unreadable="bad")["labels"])
    paths, y = SplitManifest.load(ref_dir / "split.csv", labels=labels).files("train", pbc, labels=labels)
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as d:
        sm = Path(d) / "sm"
        saved_model(load_model(ref_dir / "model.keras"), sm)

        def cal(n, preset, frac):
            px, _, _ = sample_pixels(paths, y, n, size, 42, augment_preset=preset, augmented_fraction=frac)
            return calibration_batch(px)

        def timed(name, fn):
            t = time.time()
            out[name] = fn()
            write_bytes(files / f"{name}.tflite", out[name])
            print(f"built {name} ({time.time() - t:.0f} s, {len(out[name]) / 1e6:.2f} MB)", flush=True)

        plain_cal = cal(300, "robust", 0.5)
        t = time.time()
        q = Quantiser(sm, plain_cal)
        print(f"calibrated plain ({time.time() - t:.0f} s)", flush=True)
        rank_imgs = rank_subset(plain_cal, 100)
        shifted_rank = shifted_rank_images(rank_imgs)  # what the shipped int8 now ranks on
        timed("plain", lambda: q.model())
        by_cal = rank(q.layer_errors(rank_imgs), "rmse_over_scale")
        by_shift = rank(q.layer_errors(shifted_rank), "rmse_over_scale")
        print("worst on calibration:", [e.layer for e in by_cal[:8]])
        print("worst on shifted    :", [e.layer for e in by_shift[:12]])
        timed("mixed_cal_K8", lambda: q.selective(by_cal, [8])[8][0])
        sel = q.selective(by_shift, [2, 4, 8, 12])
        for k, (blob, _chosen) in sel.items():
            timed(f"mixed_shift_K{k}", lambda b=blob: b)
        timed("dw_float", lambda: q.model(float_ops=["DEPTHWISE_CONV_2D"]))
        del q
        t = time.time()
        q = Quantiser(sm, cal(600, "robust", 1.0))
        print(f"calibrated robust600 ({time.time() - t:.0f} s)", flush=True)
        timed("cal_robust600", lambda: q.model())
        timed("mixed_shift_K8_robust600", lambda: q.selective(by_shift, [8])[8][0])
        del q
        t = time.time()
        q = Quantiser(sm, cal(600, "randconv", 0.5))
        print(f"calibrated randconv600 ({time.time() - t:.0f} s)", flush=True)
        timed("cal_randconv600", lambda: q.model())
    return out


def metrics(p, ref, y, temperature, threshold):
    pred, refp = p.argmax(1), ref.argmax(1)
    conf = apply_temperature(np.clip(p, 1e-7, 1), temperature).max(1)
    acc = conf >= threshold
    r = {"agreement_pct": 100 * float(np.mean(pred == refp)),
         "confident_disagreement_pct": 100 * float(np.mean(acc & (pred != refp))),
         "coverage_pct": 100 * float(acc.mean())}
    if y is not None:
        present = [c for c in range(p.shape[1]) if np.sum(y == c) >= MIN_CLASS]  # Tecom has 1 basophil
        r["balanced_accuracy_pct"] = 100 * float(np.mean([np.mean(pred[y == c] == c) for c in present]))
        r["accepted_and_wrong_pct"] = 100 * float(np.mean(acc & (pred != y)))
    return r


def latency(models: dict[str, Raw], px, n=100):
    times = {k: [] for k in models}
    for i in range(min(n, len(px))):
        for k, m in models.items():
            t = time.perf_counter()
            m.one(px[i])
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def choose(res: dict) -> str:
    c = res["candidates"]
    plain = c["plain"]
    ok = [k for k, v in c.items() if v["eligible_by_io"] and v["size_mb"] <= RULE["max_mb"]
          and v["latency_ratio"] <= RULE["max_latency_ratio"]
          and v["sets"]["pbc_val"]["agreement_pct"] >= plain["sets"]["pbc_val"]["agreement_pct"] - RULE["pbc_val_slack_pp"]]
    res["eligible"] = ok
    sh = {k: c[k]["sets"]["pbc_val_shifted"]["agreement_pct"] for k in ok}
    best = max(sh.values())
    near = [k for k in ok if sh[k] >= best - RULE["tie_pp"]]
    pick = min(near, key=lambda k: (c[k]["sets"]["pbc_val_shifted"]["confident_disagreement_pct"], c[k]["size_mb"]))
    return pick if sh[pick] >= sh["plain"] + RULE["min_gain_pp"] else "plain"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", default="export/reference")
    ap.add_argument("--export", default="export")
    ap.add_argument("--pbc", required=True)
    ap.add_argument("--domain", action="append", default=[], metavar="NAME=ROOT")
    ap.add_argument("--files", default="/tmp/wbc_int8_candidates")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reuse", action="store_true", help="measure the candidate files already in --files")
    a = ap.parse_args()
    ref_dir, exp, files = Path(a.reference), Path(a.export), Path(a.files)
    f32 = Classifier(exp / "wbc_float32.tflite", num_threads=2)
    size, guard, T, thr = f32.input_size, f32.scale_guard, f32.temperature, f32.abstain_threshold
    if a.reuse and (files / "cal_randconv600.tflite").is_file():  # a rerun of the measurement only
        blobs = {f.stem: f.read_bytes() for f in sorted(files.glob("*.tflite"), key=lambda f: f.stat().st_mtime)}
    else:
        blobs = build(ref_dir, a.pbc, size, files)
    labels = Labels.from_list(f32.labels)
    for v in ("float16", "dynamic", "int8_mixed", "qat_int8"):
        blobs[f"shipped_{v}"] = (exp / f"wbc_{v}.tflite").read_bytes()
    man = SplitManifest.load(ref_dir / "split.csv", labels=labels)
    sets = {}
    for split in ("val", "test"):
        paths, y = man.files(split, a.pbc, labels=labels)
        sets[f"pbc_{split}"] = (paths, y, False)
    sets = {"pbc_val": sets["pbc_val"], "pbc_val_shifted": (*sets["pbc_val"][:2], True), "pbc_test": sets["pbc_test"]}
    for spec in a.domain:
        name, root = spec.split("=", 1)
        scan = scan_dataset(root, progress=False)
        paths, y = scan.files(labels=labels)
        sets[name] = (paths, np.asarray(y), False)
    raws = {k: Raw(b) for k, b in blobs.items()}
    res = {"rule": RULE, "reference": str(ref_dir), "float32": str(exp / "wbc_float32.tflite"),
           "temperature": T, "abstain_threshold": thr, "candidates": {}, "sets": {}}
    for k, b in blobs.items():
        io = raws[k].i["dtype"] == np.uint8 and raws[k].o["dtype"] == np.uint8
        res["candidates"][k] = {"size_mb": len(b) / 1e6, "eligible_by_io": bool(io and not k.startswith("shipped_")),
                                "sets": {}}
    timing_px = None
    for name, (paths, y, shifted) in sets.items():
        t = time.time()
        px = set_pixels(paths, size, guard, shifted)
        timing_px = px if name == "pbc_val" else timing_px
        ref = f32.predict_pixels(px)
        res["sets"][name] = {"n": len(px), "selection": name in ("pbc_val", "pbc_val_shifted"),
                             "float32": metrics(ref, ref, y, T, thr)}
        for k, r in raws.items():
            res["candidates"][k]["sets"][name] = metrics(r.probs(px), ref, y, T, thr)
        print(f"{name}: {len(px)} images, {time.time() - t:.0f} s", flush=True)
    one = {k: Raw(b, threads=1) for k, b in blobs.items()}
    lat = latency(one, timing_px)
    for k, ms in lat.items():
        res["candidates"][k]["latency_ms_1thread"] = ms
        res["candidates"][k]["latency_ratio"] = ms / lat["plain"]
    res["chosen"] = choose(res)
    out = Path(a.out)
    write_json(out / "results.json", res)
    write_text(out / "results.md", to_markdown(res))
    try:
        plot(res, out / "candidates.png")
    except Exception as exc:  # noqa: BLE001 - no matplotlib: the numbers are written anyway
        print(f"no plot: {exc}")
    print(to_markdown(res))


def to_markdown(r: dict) -> str:
    names = list(r["sets"])
    lines = ["# Int8 candidates: agreement with float32 (confident disagreement) per set", "",
             f"Rule: RULE.md (selection on pbc_val and pbc_val_shifted only). **Chosen: `{r['chosen']}`.** "
             f"Eligible: {', '.join(r['eligible'])}. `shipped_*` rows are the files in export/ for context "
             "(float I/O or not candidates).", "",
             "| candidate | MB | ms 1 thr (x plain) | " + " | ".join(names) + " |",
             "|---|---:|---:|" + "---:|" * len(names)]
    for k, c in r["candidates"].items():
        cells = [f"{c['sets'][n]['agreement_pct']:.2f} ({c['sets'][n]['confident_disagreement_pct']:.1f})" for n in names]
        lines.append(f"| {'**' + k + '**' if k == r['chosen'] else k} | {c['size_mb']:.2f} | "
                     f"{c['latency_ms_1thread']:.2f} ({c['latency_ratio']:.2f}) | " + " | ".join(cells) + " |")
    lines += ["", f"Labelled sets: balanced accuracy % (classes with >= {MIN_CLASS} images) / accepted and wrong % "
              "(float32 first):", "",
              "| file | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    f32 = [f"{r['sets'][n]['float32'].get('balanced_accuracy_pct', 0):.1f} / "
           f"{r['sets'][n]['float32'].get('accepted_and_wrong_pct', 0):.1f}" for n in names]
    lines.append("| float32 | " + " | ".join(f32) + " |")
    for k, c in r["candidates"].items():
        lines.append(f"| {k} | " + " | ".join(f"{c['sets'][n].get('balanced_accuracy_pct', 0):.1f} / "
                                              f"{c['sets'][n].get('accepted_and_wrong_pct', 0):.1f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in r["sets"] if n != "pbc_val"]
    ks = [k for k in r["candidates"] if not k.startswith("shipped_")]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    w = 0.8 / len(ks)
    for i, k in enumerate(ks):
        ax.bar(np.arange(len(names)) + i * w, [r["candidates"][k]["sets"][n]["agreement_pct"] for n in names], w,
               label=k + (" (chosen)" if k == r["chosen"] else ""))
    ax.set_xticks(np.arange(len(names)) + 0.4 - w / 2, names)
    ax.set_ylim(50, 100)
    ax.set_ylabel("top-1 agreement with float32 (%)")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("int8 candidates of one model: faithful off-domain? (selection: pbc_val_shifted)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
