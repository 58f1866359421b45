"""How much a width-reduced copy keeps (issue 33, `train --narrow-from`): a linear probe of features.

For each start - the shipped model at 128 px, its alpha-0.5 copy (`model.narrow`) with the source's BatchNorm
statistics and with them re-estimated on augmented training views, the same from the ImageNet 1.0 file, and a
random alpha-0.5 network - a softmax regression is fitted on the pooled features (mean and std per channel at
the cached mode's cut, block_13's input; mean at the last ReLU) of seeded PBC train images and scored on PBC
val images.  What it answers: whether cached mode's frozen bottom of a narrowed network still sees cells.
Writes JSON + Markdown.

    .venv/bin/python benchmarks/small/narrow_probe.py --pbc ../shared/data/pbc \
        --split-manifest export/reference/split.csv --teacher export/reference \
        --imagenet ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
        --out benchmarks/small/results/narrow_probe
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from wbc_edge.core import atomic
from wbc_edge.core.preprocess import preprocess
from wbc_edge.core.tfcompat import import_tf
from wbc_edge.data import SplitManifest
from wbc_edge.data.augment import augment, preset
from wbc_edge.model.narrow import load_source, narrow_into, recalibrate_batchnorm
from wbc_edge.model.network import ModelConfig, build_model, load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pbc", required=True)
    ap.add_argument("--split-manifest", required=True)
    ap.add_argument("--teacher", required=True, help="RUN_DIR of the wide trained model")
    ap.add_argument("--imagenet", help="MobileNetV2 1.0 no-top .h5 (optional second source)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--train-images", type=int, default=1000)
    ap.add_argument("--val-images", type=int, default=500)
    ap.add_argument("--out", required=True, help="output prefix (.json and .md are added)")
    a = ap.parse_args()
    _, keras = import_tf()
    man, rng = SplitManifest.load(a.split_manifest), np.random.default_rng(0)

    def take(split, n):
        paths, y = man.files(split, a.pbc)
        i = np.sort(rng.choice(len(paths), n, replace=False))
        x = np.stack([preprocess(paths[j], a.size) for j in i]).astype(np.float32)
        return x, np.asarray(y)[i], [paths[j] for j in i]

    xtr, ytr, ptr = take("train", a.train_images)
    xva, yva, _ = take("val", a.val_images)
    aug = preset("robust")
    xcal = np.stack([augment(preprocess(p, a.size), np.random.default_rng(k), aug)
                     for k, p in enumerate(ptr[:512])]).astype(np.float32)

    def probe(model) -> dict:
        cut = keras.Model(model.input, [model.get_layer("block_13_expand").input, model.get_layer("out_relu").output])

        def feats(x):
            c, o = cut.predict(x, batch_size=64, verbose=0)
            return np.concatenate([c.mean((1, 2)), c.std((1, 2))], 1), o.mean((1, 2))

        (tc, to), (vc, vo) = feats(xtr), feats(xva)
        out = {}
        for where, tr, va in (("cut", tc, vc), ("last_relu", to, vo)):
            mu, sd = tr.mean(0), tr.std(0) + 1e-6
            keras.utils.set_random_seed(0)
            clf = keras.Sequential([keras.layers.Dense(5, activation="softmax",
                                                       kernel_regularizer=keras.regularizers.l2(1e-3))])
            clf.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
            clf.fit((tr - mu) / sd, ytr, epochs=300, batch_size=len(tr), verbose=0)
            out[where] = round(100 * float((clf.predict((va - mu) / sd, verbose=0).argmax(1) == yva).mean()), 1)
        return out

    rows = []
    teacher = load_model(Path(a.teacher) / "model.keras")
    wide = build_model(ModelConfig(alpha=1.0, input_size=a.size, weights="none"))
    wide.set_weights(teacher.get_weights())
    rows.append({"start": f"teacher 1.0 at {a.size} px", **probe(wide)})
    for name, spec in (("teacher", str(a.teacher)), ("ImageNet 1.0 file", a.imagenet)):
        if not spec:
            continue
        src = load_source(spec)
        for recal in (False, True):
            m = build_model(ModelConfig(alpha=a.alpha, input_size=a.size, weights="none"))
            narrow_into(m, src, keras)
            if recal:
                recalibrate_batchnorm(m, xcal, keras)
            rows.append({"start": f"alpha {a.alpha:g} narrowed from the {name}"
                                  f"{', BatchNorm re-estimated' if recal else ''}", **probe(m)})
            print(rows[-1], flush=True)
    keras.utils.set_random_seed(0)
    rows.append({"start": f"alpha {a.alpha:g} random", **probe(build_model(
        ModelConfig(alpha=a.alpha, input_size=a.size, weights="none")))})
    record = {"train_images": a.train_images, "val_images": a.val_images, "size": a.size, "rows": rows}
    atomic.write_json(Path(a.out + ".json"), record)
    md = [f"Linear probe, PBC val accuracy % ({a.val_images} val images; fitted on {a.train_images} train images, "
          f"{a.size} px):", "", "| start | at the cache cut (block_13 input) | at the last ReLU |", "|---|---:|---:|"]
    md += [f"| {r['start']} | {r['cut']:.1f} | {r['last_relu']:.1f} |" for r in rows]
    atomic.write_text(Path(a.out + ".md"), "\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
