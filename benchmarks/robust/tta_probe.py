"""Probe (not adopted): test-time augmentation on the shipped float32 model - dihedral averaging and a scale ensemble.

    python benchmarks/robust/tta_probe.py --shared ../shared [--model export/wbc_float32.tflite]

Why: the model is trained to be invariant to the 8 dihedral transforms and to zoom 0.8-2.8x, so averaging its
softmax over such views of each test image might recover some of the cross-lab loss without retraining - at the
price of one inference per view on the device.  Views: `asis`; `d8` (the 8 dihedral transforms); `s3` (zoom
0.7x, 1x, 1.4x about the centre, border-median fill - `augment._zoom`, the training transform); `s3d4` (those
three scales x 4 of the dihedral transforms = 12 inferences).  Sets: Tecom, CellaVision, and 60 images per class
of the leak-free PBC test split (the training split, benchmarks/training/pbc224_cached/split.csv).  Balanced
accuracy (Tecom also over EO/LY/MO/NE) and per-class recall.  Runtime only (numpy, Pillow, LiteRT).
Results: benchmarks/robust/probes/tta_test_time.txt and the robust README ("Tried and not adopted").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from wbc_edge.data.augment import _zoom, dihedral  # noqa: E402
from wbc_edge.data import SplitManifest, scan_dataset  # noqa: E402
from wbc_edge.core.labels import WBC5, WBC5_LABELS  # noqa: E402
from wbc_edge.core.preprocess import preprocess  # noqa: E402
from wbc_edge.runtime import Classifier  # noqa: E402

SPLIT = ROOT / "benchmarks/training/pbc224_cached/split.csv"
SCALES = (0.7, 1.0, 1.4)


def labelled(root: Path) -> tuple[list[str], np.ndarray]:
    return scan_dataset(root, labels=WBC5_LABELS, progress=False).files(WBC5_LABELS)


def pbc_test(root: Path, per_class: int) -> tuple[list[str], np.ndarray]:
    paths, y = SplitManifest.load(SPLIT).files("test", root, labels=WBC5_LABELS)
    keep = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in range(len(WBC5))])
    return [paths[i] for i in keep], y[keep]


def views(px: np.ndarray) -> dict[str, list[np.ndarray]]:
    scaled = [np.clip(_zoom(px.astype(np.float32), z, np.zeros(2)), 0, 255).astype(np.uint8) for z in SCALES]
    return {"asis": [px], "d8": [np.ascontiguousarray(dihedral(px, k)) for k in range(8)], "s3": scaled,
            "s3d4": [np.ascontiguousarray(dihedral(s, k)) for s in scaled for k in range(0, 8, 2)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(ROOT / "export/wbc_float32.tflite"))
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--pbc-per-class", type=int, default=60)
    args = ap.parse_args()
    data = Path(args.shared) / "data"
    clf = Classifier(args.model, num_threads=1)
    order = clf.output_order(WBC5)
    sets = {"zheng2018_tecom": labelled(data / "zheng2018_tecom"),
            "zheng2018_cellavision": labelled(data / "zheng2018_cellavision"),
            f"pbc_test_{args.pbc_per_class}pc": pbc_test(data / "pbc", args.pbc_per_class)}
    print(f"model {args.model}")
    for name, (paths, y) in sets.items():
        probs: dict[str, list] = {}
        for path in paths:
            for kind, vs in views(preprocess(path, clf.input_size)).items():
                probs.setdefault(kind, []).append(clf.predict_pixels(np.stack(vs))[:, order].mean(0))
        for kind, p in probs.items():
            pred = np.argmax(p, 1)
            rec = {c: float(np.mean(pred[y == i] == i)) for i, c in enumerate(WBC5) if np.any(y == i)}
            big4 = np.mean([rec[c] for c in WBC5[1:] if c in rec])
            print(f"{name:24s} {kind:5s} n {len(y):4d}  balanced {np.mean(list(rec.values())) * 100:5.1f} %  "
                  f"EO/LY/MO/NE {big4 * 100:5.1f} %  recall " + " ".join(f"{c[:2]} {r * 100:3.0f}" for c, r in rec.items()),
                  flush=True)


if __name__ == "__main__":
    main()
