"""Probe (not a feature): can a lab adapt without labels by moving only the pooled features back to PBC's?

    .venv/bin/python benchmarks/adapt/feature_shift_probe.py runs/robust/robust_s3 --shared ../shared

Why: AdaBN (adabn_probe.py) re-normalised every BatchNorm layer to the lab's statistics and halved accuracy,
because the top was trained on ImageNet-normalised features and the lab's class mix leaks into the statistics.
A lighter label-free correction touches only the input of the head: shift the lab's pooled features by the
difference between their mean and PBC's class-balanced train mean (equivalently a new head bias, so the result
would still be one ordinary .tflite). Variants: the plain mean; a class-balanced mean estimated with the model's
own soft labels (10 EM rounds, so Tecom's 59 % neutrophils do not pull it); half that shift; mean and spread.
Scored on all of each set (transductive, the best case) and with the statistics from 50 random images, the rest
scored (5 draws). Bottom activations come from wise_probe.py's cache (run it first) and the run's shared cache.
Balanced accuracy: Tecom over EO/LY/MO/NE, PBC test and CellaVision over all five.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wbc_edge.data.manifest import SplitManifest  # noqa: E402
from wbc_edge.data.scan import scan_dataset  # noqa: E402
from wbc_edge.core.labels import WBC5  # noqa: E402
from wbc_edge.model.network import load_model  # noqa: E402
from wbc_edge.core.tfcompat import import_tf  # noqa: E402

SETS = {"PBC test": ("pbc_test", range(5)), "zheng2018_tecom": ("tecom", [1, 2, 3, 4]),
        "zheng2018_cellavision": ("cellavision", range(5))}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def balanced(p: np.ndarray, y: np.ndarray, classes) -> float:
    pred = p.argmax(1)
    return 100 * float(np.mean([np.mean(pred[y == c] == c) for c in classes if (y == c).any()]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/wbc_wise_cache"))
    args = ap.parse_args()
    _, keras = import_tf()
    data = Path(args.shared) / "data"
    model = load_model(args.run / "model.keras")
    top = keras.Model(model.get_layer("block_13_expand").input, model.get_layer("pool").output)
    w, b = model.get_layer("predictions").get_weights()
    shared = Path(json.loads((args.run / "config.json").read_text())["shared_cache"])
    man = SplitManifest.load(args.run / "split.csv", root=data / "pbc")

    def feats(a) -> np.ndarray:
        return np.concatenate([top.predict(np.asarray(a[i:i + 256], np.float32), verbose=0)
                               for i in range(0, len(a), 256)])

    f_train = feats(np.load(sorted(shared.glob("act_train_clean_*.npy"))[0], mmap_mode="r"))
    y_train = np.array(man.labels("train", WBC5))
    class_means = np.stack([f_train[y_train == c].mean(0) for c in range(5)])
    mu_src = class_means.mean(0)

    def shift_em(f: np.ndarray, share: float = 1.0) -> np.ndarray:
        p = softmax(f @ w + b)
        for _ in range(10):
            cm = (p / p.sum(0, keepdims=True)).T @ f  # soft class means of the lab's features
            present = p.sum(0) > 1.0
            p = softmax((f - share * (cm[present].mean(0) - class_means[present].mean(0))) @ w + b)
        return p

    arms = {"as is": lambda f: softmax(f @ w + b),
            "mean shift": lambda f: softmax((f - f.mean(0) + mu_src) @ w + b),
            "class-balanced shift (EM)": shift_em,
            "half the class-balanced shift": lambda f: shift_em(f, 0.5),
            "mean and spread": lambda f: softmax(((f - f.mean(0)) / (f.std(0) + 1e-6) * (f_train.std(0) + 1e-6)
                                                  + mu_src) @ w + b)}
    domains = {}
    for name, (key, classes) in SETS.items():
        if key == "pbc_test":
            y = np.array(man.labels("test", WBC5))
        else:
            y = np.array([WBC5.index(r.label) for r in scan_dataset(data / name, progress=False).records])
        domains[name] = (feats(np.load(args.cache / f"{key}.npy")), y, classes)
    print("| correction | " + " | ".join(domains) + " |\n|---|" + "---:|" * len(domains))
    for arm, fn in arms.items():
        print(f"| {arm} (all images) | " + " | ".join(f"{balanced(fn(f), y, c):.1f}" for f, y, c in domains.values())
              + " |")
    rng = np.random.default_rng(0)
    for name in ("zheng2018_tecom", "zheng2018_cellavision"):
        f, y, c = domains[name]
        res = []
        for _ in range(5):
            idx = rng.permutation(len(y))
            stats, rest = idx[:50], idx[50:]
            res.append((balanced(arms["as is"](f[rest]), y[rest], c),
                        balanced(softmax((f[rest] - f[stats].mean(0) + mu_src) @ w + b), y[rest], c)))
        m = np.mean(res, 0)
        print(f"{name}: statistics from 50 images, the rest scored (5 draws): as is {m[0]:.1f}, mean shift {m[1]:.1f}")


if __name__ == "__main__":
    main()
