"""Make tiny .tflite test models (float32 + full-integer int8 with uint8 I/O, contracts embedded).

    python benchmarks/arm/make_tiny_models.py --out DIR [--keras MODEL.keras]

Writes DIR/tiny_float32.tflite and DIR/tiny_int8.tflite: a MobileNetV2 alpha 0.35 at 96 px (no pretrained
weights) fitted for a few epochs on samples/pbc_sample (or the given .keras), converted with the fast
`model.export()` + `TFLiteConverter.from_saved_model` path and int8-calibrated on the preprocessed samples.
For exercising run_emulated.sh and tests/test_runtime.py on machines without TensorFlow
(WBC_EDGE_TEST_TFLITE_DIR).  Needs TensorFlow (the training extra).
The real models come from `wbc-edge export`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
SIZE = 96


def sample_images():
    from wbc_edge.core.labels import WBC5 as CLASSES

    root = REPO / "samples" / "pbc_sample"
    paths, labels = [], []
    for ci, name in enumerate(CLASSES):
        for p in sorted((root / name).iterdir()):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                paths.append(p)
                labels.append(ci)
    return paths, np.array(labels)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--keras", help="use this .keras model instead of fitting a tiny one")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))

    from wbc_edge.core.labels import WBC5 as CLASSES
    from wbc_edge.core.contract import ModelContract, embed_contract
    from wbc_edge.model.network import ModelConfig, build_model, load_model
    from wbc_edge.core.preprocess import PREPROCESS_VERSION, preprocess
    from wbc_edge.core.tfcompat import import_tf

    tf, keras = import_tf()
    paths, labels = sample_images()
    if args.keras:
        model = load_model(args.keras)
        size = int(model.input_shape[1])
    else:
        size = SIZE
        keras.utils.set_random_seed(0)
        model = build_model(ModelConfig(alpha=0.35, input_size=size, weights="none"))
        x = np.stack([preprocess(p, size) for p in paths]).astype(np.float32)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(x, labels, epochs=4, batch_size=8, verbose=0)
    calib = [preprocess(p, size) for p in paths]

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.export(tmp)
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        fp32 = conv.convert()
        conv = tf.lite.TFLiteConverter.from_saved_model(tmp)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
        int8 = conv.convert()

    from ai_edge_litert.interpreter import Interpreter

    for variant, blob in (("float32", fp32), ("int8", int8)):
        it = Interpreter(model_content=blob)
        inp, o = it.get_input_details()[0], it.get_output_details()[0]
        c = ModelContract(labels=list(CLASSES), input_size=size, variant=variant,
                          preprocess=PREPROCESS_VERSION,
                          input_dtype=np.dtype(inp["dtype"]).name, output_dtype=np.dtype(o["dtype"]).name)
        if variant == "int8":
            c.input_scale, c.input_zero_point = float(inp["quantization"][0]), int(inp["quantization"][1])
            c.output_scale, c.output_zero_point = float(o["quantization"][0]), int(o["quantization"][1])
        dest = out / f"tiny_{variant}.tflite"
        dest.write_bytes(embed_contract(blob, c))
        print(f"wrote {dest} ({dest.stat().st_size / 1e3:.0f} kB, input {inp['dtype'].__name__} "
              f"q={inp['quantization']}, output q={o['quantization']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
