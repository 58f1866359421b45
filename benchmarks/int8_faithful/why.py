"""Why the plain int8 file breaks off-domain (issue 32 item 1): how many of the 256 int8 levels each channel of
each activation gets under the per-tensor scale the converter fits, on calibration-like PBC images and on
foreign images.

    .venv/bin/python benchmarks/int8_faithful/why.py --reference export/reference --pbc ../shared/data/pbc \
        --domain Tecom=../shared/data/zheng2018_tecom --domain LISC=../shared/data/lisc \
        --out benchmarks/int8_faithful/results/why.json

An int8 activation has one scale per tensor (weights get one per channel): scale = tensor range / 255.  A
channel whose own values span a small part of the tensor's range is represented by few levels, so its
rounding error relative to its signal is large.  For every ReLU/BN output of the Keras model this measures,
on PBC train images (the calibration's kind, tensor range = their min/max as the calibrator takes it), the
median over channels of (channel p99.9 - p0.1) / tensor range x 255 - the levels a typical channel uses - and
the share of channels with fewer than 8.  Then the same tensors on foreign images against the *PBC* range:
the share of values beyond it (clipped) and the levels used there.  Needs TensorFlow (the Keras model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wbc_edge.core.atomic import read_json, write_json
from wbc_edge.data import SplitManifest, scan_dataset
from wbc_edge.data.sampling import stratified_indices
from wbc_edge.core.labels import Labels
from wbc_edge.core.preprocess import preprocess_batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", default="export/reference")
    ap.add_argument("--pbc", required=True)
    ap.add_argument("--domain", action="append", default=[], metavar="NAME=ROOT")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    from wbc_edge.model.network import load_model
    from wbc_edge.core.tfcompat import import_tf

    tf, keras = import_tf()
    ref = Path(a.reference)
    labels = Labels.from_list(read_json(ref / "run.json", ValueError, missing="missing", unreadable="bad")["labels"])
    model = load_model(ref / "model.keras")
    size = int(model.input_shape[1])
    names = [lyr.name for lyr in _layers(model) if lyr.name.endswith(("_relu", "_BN", "relu"))]
    probe = keras.Model(model.inputs, [_layer(model, n).output for n in names])
    paths, y = SplitManifest.load(ref / "split.csv", labels=labels).files("train", a.pbc, labels=labels)
    sets = {"PBC train": [paths[i] for i in stratified_indices(y, a.images, 7)]}
    for spec in a.domain:
        name, root = spec.split("=", 1)
        files, yy = scan_dataset(root, progress=False).files()
        sets[name] = [files[i] for i in stratified_indices(np.asarray(yy), a.images, 7)]
    acts = {}
    for name, files in sets.items():
        outs = probe.predict(preprocess_batch(files, size).astype(np.float32), batch_size=8, verbose=0)
        acts[name] = [o.reshape(-1, o.shape[-1]) for o in outs]
    res = {"images_per_set": a.images, "layers": {}}
    for li, lname in enumerate(names):
        base = acts["PBC train"][li]
        lo, hi = float(base.min()), float(base.max())
        span = max(hi - lo, 1e-12)
        row = {}
        for sname, per in acts.items():
            x = per[li]
            ch = (np.percentile(x, 99.9, axis=0) - np.percentile(x, 0.1, axis=0)) / span * 255
            row[sname] = {"median_levels": float(np.median(ch)), "share_channels_under_8_levels": float(np.mean(ch < 8)),
                          "clipped_pct": 100 * float(np.mean((x < lo) | (x > hi)))}
        res["layers"][lname] = row
    write_json(Path(a.out), res)
    for lname, row in res["layers"].items():
        print(f"{lname:32s} " + "  ".join(f"{s}: {r['median_levels']:5.1f} lv, {100 * r['share_channels_under_8_levels']:4.0f}% <8, "
                                            f"clip {r['clipped_pct']:.3f}%" for s, r in row.items()))


def _layers(model):
    for lyr in model.layers:
        if hasattr(lyr, "layers"):
            yield from _layers(lyr)
        else:
            yield lyr


def _layer(model, name):
    for lyr in _layers(model):
        if lyr.name == name:
            return lyr
    raise KeyError(name)


if __name__ == "__main__":
    main()
