"""bench and crossdomain take their classes from the model, not from the five WBC names: a 3-class and an
8-class synthetic model + dataset, end to end.

Each model is a small tf_keras classifier (conv + pooling + softmax on 0..255 pixels, random weights: what is
tested is the class plumbing, not accuracy) converted to float32 with the fast `model.export` +
`TFLiteConverter.from_saved_model` path, its contract carrying the class list (sorted canonical names, as
`Labels.from_names` gives a dataset's folders).  The 8-class folders use common spellings ("EOS",
"Platelets", "IG") that must meet the model's canonical names.  The .keras reference path (labels from the
run.json beside it) runs once, for the 3-class model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from wbc_edge.bench import BenchConfig, run_bench, to_markdown
from wbc_edge.core.contract import embed_contract, read_contract
from wbc_edge.bench.crossdomain import CrossDomainConfig, Domain, run_report
from wbc_edge.core.errors import DatasetError, ModelFileError
from wbc_edge.core.labels import Labels

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
pytestmark = pytest.mark.skipif(not HAVE_TF or bool(os.environ.get("WBC_EDGE_TEST_TFLITE_DIR")),
                                reason="needs TensorFlow to build the synthetic models")

FOLDERS = {3: ("blast", "plasma_cell", "smudge_cell"),
           8: ("Basophils", "EOS", "erythroblast", "IG", "lymph", "mono", "neutrophil", "Platelets")}
PER_CLASS = 3
SIZE = 32
FAST = dict(runs=2, warmup=0, batch_throughput_images=0, ttfp=False)


def _dataset(root, folders, seed: int) -> None:
    """PER_CLASS noisy 40x40 PNGs per class folder, a different mean colour per class."""
    rng = np.random.default_rng(seed)
    for i, name in enumerate(folders):
        (root / name).mkdir(parents=True)
        base = np.array([(37 * i) % 256, (91 * i + 40) % 256, (151 * i + 80) % 256], dtype=np.float32)
        for k in range(PER_CLASS):
            px = np.clip(base + rng.normal(0, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / name / f"{k}.png")


def _small_model(keras, n: int):
    """A small tf_keras classifier on 0..255 pixels (conv + pooling + softmax), randomly initialised: its
    outputs depend on the image, it converts in seconds and loads in safe mode like build_model's."""
    inputs = keras.Input(shape=(SIZE, SIZE, 3), dtype="float32", name="pixels")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalise")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(n, activation="softmax", name="predictions")(x))


@pytest.fixture(scope="module", params=[3, 8], ids=["3-class", "8-class"])
def synthetic(request, tmp_path_factory) -> dict:
    """{'n', 'labels', 'data', 'float32' (.tflite with contract), 'keras' (run.json labels beside it)}."""
    from ai_edge_litert.interpreter import Interpreter

    from wbc_edge.core.contract import ModelContract
    from wbc_edge.core.tfcompat import import_tf

    n = request.param
    out = tmp_path_factory.mktemp(f"synthetic{n}")
    _dataset(out / "data", FOLDERS[n], seed=n)
    labels = Labels.from_names(FOLDERS[n])
    tf, keras = import_tf()
    keras.utils.set_random_seed(n)
    model = _small_model(keras, n)
    run = out / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "run.json").write_text(json.dumps({"labels": labels.to_list()}), encoding="utf-8")
    model.export(str(out / "saved"))
    blob = tf.lite.TFLiteConverter.from_saved_model(str(out / "saved")).convert()
    assert Interpreter(model_content=blob).get_output_details()[0]["shape"][1] == n
    export = out / "export"
    export.mkdir()
    f32 = export / "wbc_float32.tflite"
    f32.write_bytes(embed_contract(blob, ModelContract(labels=labels.to_list(), input_size=SIZE,
                                                       variant="float32")))
    return {"n": n, "labels": labels, "data": out / "data", "float32": f32, "keras": run / "model.keras"}


def _reordered(src, dst, order) -> None:
    """A copy whose contract lists the same classes in another order (so its outputs are relabelled)."""
    data = src.read_bytes()
    c = read_contract(data)
    c.labels = [c.labels[i] for i in order]
    dst.write_bytes(embed_contract(data, c))


def test_bench_uses_the_models_classes(synthetic, tmp_path):
    n, labels = synthetic["n"], synthetic["labels"]
    relabelled = tmp_path / "relabelled.tflite"
    _reordered(synthetic["float32"], relabelled, list(range(1, n)) + [0])
    r = run_bench(BenchConfig([synthetic["float32"], relabelled], data=synthetic["data"],
                              max_accuracy_drop=100, min_agreement=100, **FAST))
    assert r["data"]["n_images"] == n * PER_CLASS
    assert r["data"]["class_counts"] == {c: PER_CLASS for c in labels}  # folder aliases met the canonical names
    ref, other = r["variants"]
    assert ref["is_reference"] and ref["labels"] == labels.to_list() and other["labels"] != labels.to_list()
    assert set(ref["parity"]["per_class_recall_delta_pp"]) == set(labels)
    assert len(ref["parity"]["confusion"]) == n
    # the relabelled copy's outputs are mapped by name: every top-1 moves one class on
    assert other["parity"]["agreement_pct"] == 0.0
    dis = other["parity"]["disagreements"]
    assert len(dis) == n * PER_CLASS and {d["true"] for d in dis} == set(labels)
    assert all(labels.index(d["variant_label"]) == (labels.index(d["reference_label"]) + 1) % n for d in dis)
    assert not r["gate"]["passed"] and r["gate"]["failures"][0]["variant"] == "relabelled"
    assert f"| relabelled | {dis[0]['path']} | {dis[0]['true']} |" in to_markdown(r)


def test_bench_refuses_other_classes(synthetic, tmp_path):
    other = tmp_path / "other_classes.tflite"  # the same network, its outputs named as other classes
    data = synthetic["float32"].read_bytes()
    c = read_contract(data)
    c.labels = [f"class_{i}" for i in range(synthetic["n"])]
    other.write_bytes(embed_contract(data, c))
    # its classes are not the data's folders
    with pytest.raises(DatasetError, match="unknown class folder"):
        run_bench(BenchConfig([other], data=synthetic["data"], **FAST))
    # two models with different classes cannot be compared
    with pytest.raises(ModelFileError, match="do not match the expected labels"):
        run_bench(BenchConfig([synthetic["float32"], other], data=synthetic["data"], **FAST))


def test_keras_reference_labels_from_run_json(synthetic, tmp_path):
    if synthetic["n"] != 3:
        pytest.skip("the Keras worker path runs once (TensorFlow start-up is slow)")
    r = run_bench(BenchConfig([synthetic["float32"]], data=synthetic["data"], reference=synthetic["keras"],
                              keras_timing=False, **FAST))
    keras, f32 = r["variants"]
    assert keras["name"] == "keras" and keras["labels"] == synthetic["labels"].to_list()
    assert f32["parity"]["agreement_pct"] == 100.0 and f32["parity"]["max_abs_dprob"] < 1e-4


def test_crossdomain_uses_the_models_classes(synthetic, tmp_path):
    labels, n = synthetic["labels"], synthetic["n"]
    relabelled = tmp_path / "relabelled.tflite"
    _reordered(synthetic["float32"], relabelled, list(range(1, n)) + [0])
    result = run_report(CrossDomainConfig(models=[str(synthetic["float32"]), str(relabelled)],
                                          domains=[Domain(str(synthetic["data"]), name="synthetic")],
                                          progress=False))
    assert result["reference"] == str(synthetic["float32"]) and result["labels"] == labels.to_list()
    d = result["domains"][0]
    assert d["n"] == n * PER_CLASS
    ref = d["results"][str(synthetic["float32"])]
    assert ref["support"] == {c: PER_CLASS for c in labels}
    # the relabelled copy's outputs are mapped by name: every top-1 moves one class on
    assert d["results"][str(relabelled)]["agreement_pct"] == 0.0


def test_a_folder_outside_the_models_classes_is_an_error(synthetic, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic["data"], data)
    (data / "unknown_thing").mkdir()
    shutil.copyfile(next((data / sorted(os.listdir(data))[0]).iterdir()), data / "unknown_thing" / "x.png")
    with pytest.raises(DatasetError, match="unknown class folder 'unknown_thing'"):
        run_bench(BenchConfig([synthetic["float32"]], data=data, **FAST))
