"""Is it the activations?  Convert the shipped model with 16-bit activations / int8 weights (int16x8) and check
top-1 agreement with float32 on PBC test (every 4th image), Tecom and CellaVision, plus 1-thread latency.

    .venv/bin/python benchmarks/diagnose/int16x8_probe.py --run runs/robust/robust_s1 --shared ../shared

Calibration is export's (300 stratified train images, half augmented with `robust`, seed 42, pinned 0/255).
If int16x8 still flips as many Tecom images as int8, the error comes from the int8 *weights* on those inputs,
not from activation ranges.  The converted file goes to --out (default /tmp, not shipped).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/robust/robust_s1")
    ap.add_argument("--reference", default="export/wbc_float32.tflite")
    ap.add_argument("--shared", default=os.environ.get("WBC_SHARED", "../shared"))
    ap.add_argument("--out", default="/tmp/wbc_int16x8.tflite")
    args = ap.parse_args()
    os.chdir(REPO)
    from wbc_edge.data import SplitManifest, scan_dataset
    from wbc_edge.export.calibration_data import calibration_batch, sample_pixels
    from wbc_edge.export.convert import representative_dataset, saved_model
    from wbc_edge.core.labels import WBC5, WBC5_LABELS
    from wbc_edge.model.network import load_model
    from wbc_edge.core.preprocess import preprocess
    from wbc_edge.runtime import Classifier
    from wbc_edge.core.tfcompat import import_tf

    tf, _ = import_tf()
    run, pbc = Path(args.run), Path(args.shared) / "data" / "pbc"
    paths, y = SplitManifest.load(run / "split.csv", labels=WBC5_LABELS).files("train", str(pbc), labels=WBC5_LABELS)
    px, _, _ = sample_pixels(paths, y, 300, 224, 42, augment_preset="robust", augmented_fraction=0.5)
    with tempfile.TemporaryDirectory() as d:
        saved_model(load_model(run / "model.keras"), Path(d) / "sm")
        conv = tf.lite.TFLiteConverter.from_saved_model(str(Path(d) / "sm"))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        conv.representative_dataset = representative_dataset(calibration_batch(px))
        t = time.time()
        blob = conv.convert()
    Path(args.out).write_bytes(blob)
    print(f"int16x8: {len(blob) / 1e6:.2f} MB, converted in {time.time() - t:.0f} s -> {args.out}")
    ref, q = Classifier(args.reference, num_threads=1), Classifier(args.out, labels=WBC5, num_threads=1)
    rows = [r for r in SplitManifest.load(run / "split.csv").rows if r.split == "test"][::4]
    doms = {"PBC test (every 4th)": [str(pbc.joinpath(*r.path.split("/"))) for r in rows]}
    for name in ("zheng2018_tecom", "zheng2018_cellavision"):
        s = scan_dataset(str(Path(args.shared) / "data" / name), progress=False)
        doms[name] = [str(Path(s.root) / r.path) for r in s.records]
    one = preprocess(doms[next(iter(doms))][0], 224)[None]
    for c in (ref, q):
        c.predict_pixels(one)
        t = time.perf_counter()
        for _ in range(10):
            c.predict_pixels(one)
        print(f"{c.model_path.name}: {(time.perf_counter() - t) * 100:.1f} ms per image, 1 thread")
    for d, files in doms.items():
        x = np.stack([preprocess(f, 224) for f in files])
        a, b = ref.predict_pixels(x).argmax(1), q.predict_pixels(x).argmax(1)
        print(f"{d}: n {len(files)}, agreement {100 * np.mean(a == b):.2f} % ({int(np.sum(a != b))} flips)")


if __name__ == "__main__":
    main()
