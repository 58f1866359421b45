"""Probe: how a model holds up when the cells are smaller in the frame than PBC's (a lower magnification).

    .venv/bin/python benchmarks/robust/small_cell_probe.py --shared ../shared \
        runs/ablation/robust_s42/model.keras runs/ablation/robust_z5_s42/model.keras export/wbc_float32.tflite

Why: DOMAIN_SHIFT.md reports a lab (not in ../shared) whose cells are already small, on which zooming out ruins
the PBC model - and `robust` only zooms 0.8-2.8x in training, i.e. mostly *larger* cells (Tecom's tight crops).
We have no labelled small-cell lab, so this is a stand-in: the leak-free PBC test split (2,057 images;
benchmarks/training/pbc224_cached/split.csv) with every image zoomed out about its centre by a factor z
(`augment._zoom`, the training transform: the uncovered border takes the border's median colour).  PBC cells
fill ~1/3 of the crop, so z = 0.5 is a cell filling ~1/6 (e.g. a 50x instead of a 100x objective).
Printed and written (--out): balanced accuracy and per-class recall per model and z.  Keras files go through
the Keras model, .tflite files through the runtime (float32 input or uint8: the contract says).
With --guard (a scale_guard.json, or a run directory holding one) every (model, z) is scored twice: as is and
through `wbc_edge.core.scale_guard` (what the runtime feeds), with the share of images it magnified.
With --shifts PRESET each zoomed image also gets that augmentation preset's colour and acquisition shifts (its
zoom and shift left out; seeded per image): stain, hue, casts, grey, blur, low resolution, JPEG, noise - other
labs' cameras, to check that the guard still finds the nucleus under them.

    .venv/bin/python benchmarks/robust/small_cell_probe.py --shared ../shared export/wbc_float32.tflite \
        --guard runs/robust/robust_s3 --out benchmarks/robust/probes/scale_guard_shipped
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from wbc_edge.data.augment import _zoom, augment, preset  # noqa: E402
from wbc_edge.data import SplitManifest  # noqa: E402
from wbc_edge.core.labels import WBC5, WBC5_LABELS  # noqa: E402
from wbc_edge.core.preprocess import preprocess  # noqa: E402
from wbc_edge.core.scale_guard import SCALE_GUARD_FILE, ScaleGuard, guard_batch  # noqa: E402

SPLIT = ROOT / "benchmarks/training/pbc224_cached/split.csv"
ZOOMS = (1.0, 0.7, 0.5, 0.35)


def predictor(path: str):
    """uint8 (N, S, S, 3) pixels -> class index in WBC5 order; and the model's input size."""
    if path.endswith(".tflite"):
        from wbc_edge.runtime import Classifier

        clf = Classifier(path, num_threads=2)
        order = clf.output_order(WBC5)
        return (lambda px: clf.predict_pixels(px)[:, order].argmax(1)), clf.input_size
    from wbc_edge.model.network import load_model

    model = load_model(path)
    return (lambda px: model.predict(px.astype(np.float32), batch_size=64, verbose=0).argmax(1)), \
        int(model.input_shape[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help=".keras or .tflite files (WBC5 outputs)")
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--zooms", type=float, nargs="+", default=list(ZOOMS))
    ap.add_argument("--out", default=None, help="write the table as OUT.md and OUT.json")
    ap.add_argument("--guard", default=None, help="scale_guard.json or a run directory with one: also score "
                                                   "every (model, zoom) through the scale guard")
    ap.add_argument("--shifts", default=None, metavar="PRESET",
                    help="also apply this augmentation preset (without zoom/shift) after zooming out, e.g. robust")
    args = ap.parse_args()
    shifts = preset(args.shifts, zoom_p=0.0, translate=0.0) if args.shifts else None
    guard = None
    if args.guard:
        g = Path(args.guard)
        guard = ScaleGuard.from_dict(json.loads((g / SCALE_GUARD_FILE if g.is_dir() else g).read_text()))
    paths, y = SplitManifest.load(SPLIT).files("test", Path(args.shared) / "data" / "pbc", labels=WBC5_LABELS)
    pixels: dict[tuple[int, float | str], np.ndarray] = {}  # (input size, zoom) -> uint8 images, for all models

    def clean(size: int) -> np.ndarray:
        if (size, "clean") not in pixels:
            pixels[(size, "clean")] = np.stack([preprocess(p, size) for p in paths])
        return pixels[(size, "clean")]

    def zoomed(size: int, z: float) -> np.ndarray:
        if (size, z) not in pixels:
            out = [p if z == 1.0 else np.clip(_zoom(p.astype(np.float32), z, np.zeros(2)), 0, 255).astype(np.uint8)
                   for p in clean(size)]
            if shifts is not None:
                out = [augment(p, np.random.default_rng([20261203, i]), shifts) for i, p in enumerate(out)]
            pixels[(size, z)] = np.stack(out)
        return pixels[(size, z)]

    rows = []
    for m in args.models:
        predict, size = predictor(m)
        for z in args.zooms:
            for g in ([None, guard] if guard else [None]):
                px, zooms = guard_batch(zoomed(size, z), g)
                pred = predict(px)
                recall = {c: float(np.mean(pred[y == i] == i)) for i, c in enumerate(WBC5)}
                rows.append({"model": m, "zoom": z, "n": int(len(y)), "scale_guard": g.to_dict() if g else None,
                             "magnified": float(np.mean(zooms != 1.0)),
                             "balanced_accuracy": float(np.mean(list(recall.values()))), "recall": recall})
                print(f"{m}  zoom {z:g}{'  guard' if g else ''}: balanced accuracy "
                      f"{rows[-1]['balanced_accuracy']:.4f}  " + " ".join(f"{c[:2]} {r:.2f}" for c, r in recall.items()),
                      flush=True)
    lines = ["| model | zoom | scale guard (magnified %) | balanced acc % | "
             + " | ".join(f"{c[:2].upper()} %" for c in WBC5) + " |", "|---|---:|---|---:|" + "---:|" * len(WBC5)]
    lines += [f"| {r['model']} | {r['zoom']:g} | "
              + (f"on ({100 * r['magnified']:.1f})" if r.get("scale_guard") else "off")
              + f" | {100 * r['balanced_accuracy']:.1f} | "
              + " | ".join(f"{100 * r['recall'][c]:.1f}" for c in WBC5) + " |" for r in rows]
    if guard:
        lines += ["", f"Scale guard: {json.dumps(guard.to_dict())}"]
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        what = f", then the `{args.shifts}` preset's colour/acquisition shifts" if shifts else ""
        out.with_suffix(".md").write_text(f"PBC test split ({len(y)} images), zoomed out about the centre{what}; "
                                          "`benchmarks/robust/small_cell_probe.py`\n\n" + "\n".join(lines) + "\n")
        out.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
