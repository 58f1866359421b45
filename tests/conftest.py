"""Shared fixtures: the shipped sample images and a tiny (alpha 0.35, 96 px, weights none) model trained
briefly on them, so parity tests compare non-trivial outputs.  Built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_ROOT = REPO / "samples" / "pbc_sample"
TINY_SIZE = 96


def pytest_configure(config):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def sample_root() -> Path:
    assert SAMPLE_ROOT.is_dir(), f"shipped sample data missing: {SAMPLE_ROOT}"
    return SAMPLE_ROOT


@pytest.fixture(scope="session")
def sample_labels(sample_root):
    """The shipped samples' classes, read from their folders (the five WBC classes)."""
    from wbc_edge.core.labels import Labels

    return Labels.from_names(p.name for p in sample_root.iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="session")
def sample_files(sample_root, sample_labels):
    """(paths, label indices) of every shipped sample image, sorted."""
    paths, labels = [], []
    for ci, name in enumerate(sample_labels):
        for p in sorted((sample_root / name).iterdir()):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                paths.append(p)
                labels.append(ci)
    return paths, np.array(labels, dtype=np.int64)


@pytest.fixture(scope="session")
def pbc_root() -> Path:
    """The full PBC folder, from WBC_EDGE_PBC; tests needing it skip when it is absent."""
    value = os.environ.get("WBC_EDGE_PBC")
    if not value or not Path(value).is_dir():
        pytest.skip("full PBC data not available: set WBC_EDGE_PBC to the PBC ImageFolder (e.g. ../shared/data/pbc)")
    return Path(value)


@pytest.fixture(scope="session")
def tiny_model_path(discriminative_tiny_model_path) -> Path:
    """A tiny MobileNetV2 (alpha 0.35, 96 px, no pretrained weights) fitted on the samples; see below."""
    return discriminative_tiny_model_path


# --- export fixtures (tests/test_export.py) -------------------------------------------------------------

@pytest.fixture(scope="session")
def discriminative_tiny_model_path(tmp_path_factory, sample_files) -> Path:
    """Like `tiny_model_path`, but one whose inference-mode outputs actually depend on the image.

    MobileNetV2's BatchNorm momentum is 0.999: after the ~20 steps `tiny_model_path` trains, the moving
    statistics are still near their initial values and the model predicts one class for every image (in
    inference mode, probabilities ~0.2 each), which makes any Keras-vs-TFLite parity check vacuous.  Here the
    BatchNorm momentum is 0.5 and training runs 8 epochs (~10 s): ~90 % accuracy on the samples, confident
    outputs.  Being trained from scratch on 40 images, it quantises worse than a real model (int8 mean
    |dprob| ~0.05), so tests using it relax the int8 parity gate.
    """
    from wbc_edge.model.network import ModelConfig, build_model
    from wbc_edge.core.preprocess import preprocess
    from wbc_edge.core.tfcompat import import_tf

    tf, keras = import_tf()
    keras.utils.set_random_seed(0)
    model = build_model(ModelConfig(alpha=0.35, input_size=TINY_SIZE, weights="none"))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.5
    paths, labels = sample_files
    x = np.stack([preprocess(p, TINY_SIZE) for p in paths]).astype(np.float32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, labels, epochs=8, batch_size=8, verbose=0)
    out = tmp_path_factory.mktemp("tiny_disc") / "model.keras"
    model.save(out)
    return out


@pytest.fixture(scope="session")
def sample_split_csv(tmp_path_factory, sample_root, sample_labels) -> Path:
    """A split manifest for samples/pbc_sample: per class (sorted names) 2 test, 1 val, 5 train images."""
    import hashlib

    from wbc_edge.data import ManifestRow, SplitManifest

    rows = []
    for name in sample_labels:
        files = sorted(p for p in (sample_root / name).iterdir()
                       if p.is_file() and not p.name.startswith("."))
        for i, p in enumerate(files):
            split = "test" if i < 2 else ("val" if i < 3 else "train")
            rel = f"{name}/{p.name}"
            rows.append(ManifestRow(rel, name, hashlib.sha256(p.read_bytes()).hexdigest(), rel, split))
    out = tmp_path_factory.mktemp("split") / "split.csv"
    SplitManifest(rows).save(out)
    return out


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, discriminative_tiny_model_path, sample_split_csv, sample_root) -> Path:
    """A RUN_DIR as `wbc-edge train` leaves it: model.keras, split.csv, run.json with config.data_root."""
    import json
    import shutil

    run = tmp_path_factory.mktemp("run")
    shutil.copyfile(discriminative_tiny_model_path, run / "model.keras")
    shutil.copyfile(sample_split_csv, run / "split.csv")
    (run / "run.json").write_text(json.dumps({"config": {"data_root": str(sample_root)}}), encoding="utf-8")
    return run


# --- tiny .tflite files (tests/test_runtime.py, tests/test_bench.py) ------------------------------------

def tiny_contract(blob: bytes, variant: str, size: int):
    """The contract the exporter would embed, read back from the converted model's own tensors."""
    from ai_edge_litert.interpreter import Interpreter

    from wbc_edge.core.contract import ModelContract
    from wbc_edge.core.labels import WBC5

    it = Interpreter(model_content=blob)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    c = ModelContract(labels=list(WBC5), input_size=size, variant=variant,
                      input_dtype=np.dtype(inp["dtype"]).name, output_dtype=np.dtype(out["dtype"]).name)
    if np.dtype(inp["dtype"]) != np.float32:
        c.input_scale, c.input_zero_point = float(inp["quantization"][0]), int(inp["quantization"][1])
        c.output_scale, c.output_zero_point = float(out["quantization"][0]), int(out["quantization"][1])
    return c


@pytest.fixture(scope="session")
def tiny_tflite(request, tmp_path_factory, sample_files) -> dict:
    """{'float32': path, 'int8': path, 'keras': path or None, 'size': S}: the tiny model converted directly
    with tf.lite (independently of wbc_edge.export), with a contract embedded.

    With WBC_EDGE_TEST_TFLITE_DIR set (e.g. under ARM emulation, where there is no TensorFlow), pre-made
    `tiny_float32.tflite` / `tiny_int8.tflite` from that folder are used instead.
    """
    from wbc_edge.core.contract import embed_contract, read_contract

    premade = os.environ.get("WBC_EDGE_TEST_TFLITE_DIR")
    if premade:
        paths = {v: Path(premade) / f"tiny_{v}.tflite" for v in ("float32", "int8")}
        return {**paths, "keras": None, "size": read_contract(paths["int8"]).input_size}
    keras_path = request.getfixturevalue("tiny_model_path")
    from wbc_edge.model.network import load_model, model_input_size
    from wbc_edge.core.preprocess import preprocess
    from wbc_edge.core.tfcompat import import_tf

    tf, _ = import_tf()
    model = load_model(keras_path)
    size = model_input_size(model)
    out = tmp_path_factory.mktemp("tflite")
    saved = out / "saved_model"
    model.export(str(saved))
    fp32 = tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert()
    calib = [preprocess(p, size) for p in sample_files[0]]
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calib)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    int8 = conv.convert()
    paths = {}
    for variant, blob in (("float32", fp32), ("int8", int8)):
        paths[variant] = out / f"tiny_{variant}.tflite"
        paths[variant].write_bytes(embed_contract(blob, tiny_contract(blob, variant, size)))
    return {**paths, "keras": keras_path, "size": size}
