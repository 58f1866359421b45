"""Probe (not a feature yet): WiSE-FT - interpolate a run's fine-tuned weights with its own head-only start.

    .venv/bin/python benchmarks/robust/wise_probe.py runs/robust/robust_s3 runs/robust/restain_s42 ... \
        --shared ../shared --out benchmarks/robust/probes/wise

theta(alpha) = (1 - alpha) theta_head + alpha theta_ft, alpha 0 ... 2 (above 1: extrapolated along the
fine-tune's direction): theta_head is the head phase's model
(`checkpoints/head.weights.h5`: ImageNet blocks 13-16 + the head trained on frozen features), theta_ft the model
the run selected (`model.keras`).  For every alpha on a grid the probe scores what training selects on (clean
PBC val accuracy and shifted-val balanced accuracy, from the shared activation cache) and reports PBC test,
Tecom (EO/LY/MO/NE) and CellaVision balanced accuracy.  The rule that decides (written first) is
probes/wise_rule.md: alpha is chosen on the selection score only.

Only the top (blocks 13-16 + head) differs between the runs and between alphas; the bottom is ImageNet's,
frozen in cached training, so the bottom activations of every image are computed once and shared.  Images are
fed without the scale guard (it magnifies 0 Tecom, 2 CellaVision and 9 PBC test images of the shipped model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wbc_edge.core import atomic  # noqa: E402
from wbc_edge.data.manifest import SplitManifest  # noqa: E402
from wbc_edge.data.scan import scan_dataset  # noqa: E402
from wbc_edge.core.labels import WBC5  # noqa: E402
from wbc_edge.model.network import load_model  # noqa: E402
from wbc_edge.core.preprocess import preprocess_batch  # noqa: E402
from wbc_edge.core.tfcompat import import_tf  # noqa: E402

GRID = [round(0.1 * i, 1) for i in range(21)]  # 0..1 interpolates, 1.1..2 extrapolates
LABS = {"tecom": ("zheng2018_tecom", [1, 2, 3, 4]), "cellavision": ("zheng2018_cellavision", [0, 1, 2, 3, 4])}


def balanced(pred: np.ndarray, y: np.ndarray, classes) -> float:
    return 100 * float(np.mean([np.mean(pred[y == c] == c) for c in classes if np.any(y == c)]))


def shared_val(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's clean and shifted val activations (shared cache, else the run's own cache)."""
    cfg = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else {}
    shared = Path(cfg.get("shared_cache") or run / "none")
    own = run / "checkpoints" / "cache"
    clean = sorted(shared.glob("act_val_clean_*.npy")) or [own / "act_val_v0.npy"]
    shifted = sorted(shared.glob("act_val_shifted_*.npy")) or [own / "act_val_v1.npy"]
    return np.load(clean[0]).astype(np.float32), np.load(shifted[0]).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/wbc_wise_cache"))
    args = ap.parse_args()
    _, keras = import_tf()
    args.out.mkdir(parents=True, exist_ok=True)
    args.cache.mkdir(parents=True, exist_ok=True)
    data = Path(args.shared) / "data"

    first = load_model(args.runs[0] / "model.keras")
    size = int(first.input_shape[1])
    cut = first.get_layer("block_13_expand").input
    bottom = keras.Model(first.input, cut)
    bottom_weights = [w.copy() for w in bottom.get_weights()]

    def acts(name: str, paths) -> np.ndarray:
        f = args.cache / f"{name}.npy"
        if not f.exists():
            out = []
            for lo in range(0, len(paths), 64):
                x = preprocess_batch(paths[lo:lo + 64], size).astype(np.float32)
                out.append(bottom.predict(x, batch_size=32, verbose=0).astype(np.float16))
                print(f"  {name}: {min(lo + 64, len(paths))}/{len(paths)}", flush=True)
            atomic.write_bytes(f, _npy(np.concatenate(out)))
        return np.load(f).astype(np.float32)

    man = SplitManifest.load(args.runs[0] / "split.csv", root=data / "pbc")
    test_paths, y_test = man.files("test", data / "pbc", labels=WBC5)
    sets = {"pbc_test": (acts("pbc_test", test_paths), y_test, range(5))}
    for key, (folder, classes) in LABS.items():
        scan = scan_dataset(data / folder, progress=False)
        y = np.array([WBC5.index(r.label) for r in scan.records])
        sets[key] = (acts(key, [data / folder / r.path for r in scan.records]), y, classes)

    rows = []
    for run in args.runs:
        model = load_model(run / "model.keras")
        assert all(np.array_equal(a, b) for a, b in zip(
            keras.Model(model.input, model.get_layer("block_13_expand").input).get_weights(), bottom_weights,
            strict=True)), f"{run}: its bottom is not ImageNet's (cut 13 only)"
        top = keras.Model(model.get_layer("block_13_expand").input, model.output)
        ft = [w.copy() for w in top.get_weights()]
        model.load_weights(run / "checkpoints" / "head.weights.h5")
        head = [w.copy() for w in top.get_weights()]
        man_run = SplitManifest.load(run / "split.csv", root=data / "pbc")
        y_val = man_run.labels("val", WBC5)
        v_clean, v_shift = shared_val(run)
        state = json.loads((run / "state.json").read_text())
        for a in GRID:
            top.set_weights([(1 - a) * h + a * f for h, f in zip(head, ft, strict=True)])
            pv = top.predict(v_clean, batch_size=128, verbose=0).argmax(1)
            ps = top.predict(v_shift, batch_size=128, verbose=0).argmax(1)
            row = {"run": run.name, "alpha": a, "val_acc": 100 * float(np.mean(pv == y_val)),
                   "shifted_bal": balanced(ps, y_val, range(5))}
            row["select"] = 0.5 * (row["val_acc"] + row["shifted_bal"]) / 100
            for key, (x, y, classes) in sets.items():
                p = top.predict(x, batch_size=128, verbose=0).argmax(1)
                row[key] = 100 * float(np.mean(p == y)) if key == "pbc_test" else balanced(p, y, classes)
            rows.append(row)
            print(json.dumps(row), flush=True)
        own = [r for r in rows if r["run"] == run.name and r["alpha"] == 1.0][0]
        print(f"{run.name}: recorded select {state['best']['select']:.4f}, probe at alpha 1 {own['select']:.4f}",
              flush=True)
    atomic.write_json(args.out / "wise_probe.json", rows)
    atomic.write_text(args.out / "wise_probe.md", table(rows))
    print(table(rows))


def _npy(a: np.ndarray) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def table(rows: list[dict]) -> str:
    lines = ["| run | alpha | PBC val acc % | shifted val bal. % | selection score | PBC test acc % | "
             "Tecom EO/LY/MO/NE % | CellaVision bal. % |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == run]
        best = max(mine, key=lambda r: (round(r["select"], 6), r["alpha"]))
        for r in mine:
            mark = " **(alpha*)**" if r is best else ""
            lines.append(f"| {run} | {r['alpha']:.1f}{mark} | {r['val_acc']:.2f} | {r['shifted_bal']:.2f} | "
                         f"{r['select']:.4f} | {r['pbc_test']:.2f} | {r['tecom']:.1f} | {r['cellavision']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
