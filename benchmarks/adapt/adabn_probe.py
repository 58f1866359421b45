"""Probe (not a feature): does re-estimating BatchNorm statistics on a new lab's images help? (AdaBN)

    .venv/bin/python benchmarks/adapt/adabn_probe.py --model runs/robust/robust_s3/model.keras --shared ../shared

AdaBN (Li et al. 2016) needs no labels: every BatchNorm layer's moving mean/variance is replaced by the
statistics of the target images (one forward pass in training mode with momentum 0).  Printed per set:
balanced accuracy of the model as is, after AdaBN on all of the set's images (transductive: the best case),
on 20 / 50 random images of it (scored on the rest, 3 draws), and with the statistics mixed half source /
half target.  Tecom is scored over EO/LY/MO/NE (its one basophil), CellaVision over all five classes.
Result on 2026-12-02 (robust_s3): AdaBN halves both sets' balanced accuracy - see benchmarks/adapt/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wbc_edge.data.scan import scan_dataset  # noqa: E402
from wbc_edge.core.labels import WBC5  # noqa: E402
from wbc_edge.model.network import load_model  # noqa: E402
from wbc_edge.core.preprocess import preprocess_batch  # noqa: E402
from wbc_edge.core.tfcompat import import_tf  # noqa: E402


def load(root: Path, size: int):
    scan = scan_dataset(root, progress=False)
    x = preprocess_batch((root / r.path for r in scan.records), size).astype(np.float32)
    return x, np.array([WBC5.index(r.label) for r in scan.records])


def balanced(pred, y, classes) -> float:
    return 100 * float(np.mean([np.mean(pred[y == c] == c) for c in classes if np.any(y == c)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--shared", default="../shared")
    args = ap.parse_args()
    _, keras = import_tf()
    model = load_model(args.model)
    size = int(model.input_shape[1])
    source = model.get_weights()
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]

    def adabn(x, momentum=0.0):
        """Moving statistics := momentum * source + (1 - momentum) * statistics of x (one batch)."""
        model.set_weights(source)
        saved = [(b.momentum, b.trainable) for b in bns]
        for b in bns:
            b.trainable, b.momentum = True, momentum  # frozen BN would ignore training=True
        model(x, training=True)
        for b, (m, t) in zip(bns, saved, strict=True):
            b.momentum, b.trainable = m, t

    def predict(x):
        return np.argmax(model.predict(x, batch_size=64, verbose=0), 1)

    data = Path(args.shared) / "data"
    for name, classes in (("zheng2018_tecom", [1, 2, 3, 4]), ("zheng2018_cellavision", [0, 1, 2, 3, 4])):
        x, y = load(data / name, size)
        model.set_weights(source)
        print(f"{name}: as is {balanced(predict(x), y, classes):.1f} %", flush=True)
        adabn(x)
        print(f"{name}: AdaBN on all {len(y)} images {balanced(predict(x), y, classes):.1f} %", flush=True)
        for n in (20, 50):
            accs = []
            for seed in range(3):
                idx = np.random.default_rng(seed).permutation(len(y))
                adabn(x[idx[:n]])
                accs.append(balanced(predict(x[idx[n:]]), y[idx[n:]], classes))
            print(f"{name}: AdaBN on {n} random images, the rest scored: "
                  f"{' / '.join(f'{a:.1f}' for a in accs)} % (mean {np.mean(accs):.1f})", flush=True)
        adabn(x, momentum=0.5)
        print(f"{name}: half source, half target statistics {balanced(predict(x), y, classes):.1f} %", flush=True)
    model.set_weights(source)


if __name__ == "__main__":
    main()
