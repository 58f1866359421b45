"""wbc_edge.runtime + `wbc-edge predict`: TF-free operation, parity with Keras, exact int8 arithmetic, the
pixels fed, error messages, CLI behaviour.

The tiny .tflite models are made here with TensorFlow from conftest's `tiny_model_path` (float32, and
full-int8 with uint8 I/O calibrated on the preprocessed samples, both with an embedded contract).
On a machine without TensorFlow (e.g. aarch64 under emulation, see benchmarks/arm/run_emulated.sh --pytest)
set WBC_EDGE_TEST_TFLITE_DIR to a folder holding tiny_float32.tflite and tiny_int8.tflite
(benchmarks/arm/make_tiny_models.py); the tests that need Keras or TensorFlow then skip.
WBC_EDGE_TEST_PYTHON overrides the interpreter used for subprocess tests (default: sys.executable).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import import_blocker
from PIL import Image

from wbc_edge import runtime
from wbc_edge.core.labels import WBC5 as CLASSES
from wbc_edge.core.contract import embed_contract, read_contract, strip_contract
from wbc_edge.core.errors import BadImageError, ModelFileError, WbcEdgeError
from wbc_edge.core.preprocess import preprocess
from wbc_edge.runtime import Classifier, Prediction

REPO = Path(__file__).resolve().parents[1]
PREMADE = os.environ.get("WBC_EDGE_TEST_TFLITE_DIR")
SUBPROCESS_PYTHON = os.environ.get("WBC_EDGE_TEST_PYTHON", sys.executable)
HAVE_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAVE_TF or bool(PREMADE), reason="needs TensorFlow (Keras reference)")


# ------------------------------------------------------------------------------------------------------
# fixtures: tiny .tflite models
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tiny_tflite) -> dict:
    """{'float32': path, 'int8': path, 'keras': path or None, 'size': S} (conftest's `tiny_tflite`)."""
    return tiny_tflite


@pytest.fixture(scope="module")
def keras_probs(models, sample_files) -> np.ndarray:
    if models["keras"] is None or not HAVE_TF:
        pytest.skip("needs TensorFlow (Keras reference)")
    from wbc_edge.model.network import load_model

    model = load_model(models["keras"])
    x = np.stack([preprocess(p, models["size"]) for p in sample_files[0]]).astype(np.float32)
    return np.asarray(model.predict(x, batch_size=16, verbose=0), dtype=np.float32)


@pytest.fixture(scope="module")
def clf_int8(models) -> Classifier:
    return Classifier(models["int8"])


@pytest.fixture(scope="module")
def clf_fp32(models) -> Classifier:
    return Classifier(models["float32"])


def _with_contract(models, tmp_path, name: str, **changes) -> Path:
    """A copy of the int8 model whose embedded contract has `changes` applied."""
    data = models["int8"].read_bytes()
    c = read_contract(data)
    for k, v in changes.items():
        setattr(c, k, v)
    p = tmp_path / name
    p.write_bytes(embed_contract(data, c))
    return p


def _one_line_naming(exc: BaseException, path) -> str:
    msg = str(exc)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------------
# (a) no TensorFlow anywhere on the runtime / predict path
# ------------------------------------------------------------------------------------------------------

_NO_TF_SCRIPT = import_blocker('tuple(sys.argv[1].split(",")) if sys.argv[1] else ()') + textwrap.dedent("""
    import json
    model, image = sys.argv[2], sys.argv[3]
    import wbc_edge.runtime as rt
    clf = rt.Classifier(model)
    pred = clf.predict(image)
    from wbc_edge.cli import main
    rc = main(["predict", model, image, "--json"], standalone_mode=False)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras", "keras"))
    print(json.dumps({"backend": clf.backend, "version": clf.backend_version, "label": pred.label,
                      "probs": pred.probabilities.tolist(), "rc": rc, "heavy": heavy}))
""")


def _run_no_tf(tmp_path, block: str, model, image) -> dict:
    script = tmp_path / "no_tf.py"
    script.write_text(_NO_TF_SCRIPT)
    proc = subprocess.run([SUBPROCESS_PYTHON, str(script), block, str(model), str(image)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    cli_rec = json.loads(lines[0])
    result = json.loads(lines[-1])
    result["cli"] = cli_rec
    return result


@pytest.mark.parametrize("block", ["tensorflow,tf_keras,keras", ""], ids=["tf-blocked", "tf-installed"])
def test_runtime_and_cli_predict_without_tensorflow(models, sample_files, clf_int8, tmp_path, block):
    image = sample_files[0][0]
    res = _run_no_tf(tmp_path, block, models["int8"], image)
    assert res["heavy"] == []  # not even attempted when installed: nothing imported
    # ai-edge-litert here; tflite-runtime under armv7l emulation (benchmarks/arm/run_emulated.sh --arch armv7l)
    assert res["backend"] == clf_int8.backend and res["version"]
    expected = clf_int8.predict(image)
    assert res["label"] == expected.label
    assert np.array_equal(np.asarray(res["probs"], dtype=np.float32), expected.probabilities)
    assert res["cli"]["label"] == expected.label and res["cli"]["file"] == str(image)


def test_import_does_not_import_tensorflow_or_interpreter():
    code = ("import sys, wbc_edge.runtime; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'tf_keras', 'keras', 'ai_edge_litert', 'tflite_runtime')))")
    out = subprocess.run([SUBPROCESS_PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


_FAKE_TFLITE_RUNTIME = textwrap.dedent("""
    class Interpreter:  # stands in for tflite_runtime's; only the backend choice is tested
        pass
""")

_BACKEND_SCRIPT = import_blocker('tuple(sys.argv[1].split(","))') + textwrap.dedent("""
    from wbc_edge import runtime
    from wbc_edge.core.errors import WbcEdgeError
    try:
        b = runtime.load_backend()
        print(b.name, "tensorflow" in sys.modules)
        if len(sys.argv) > 2:
            clf = runtime.Classifier(sys.argv[2])
            print(clf.predict(sys.argv[3]).label)
    except WbcEdgeError as exc:
        print("ERROR", exc)
""")


def _run_backend(tmp_path, block: str, *extra, fake_tflite_runtime=False) -> list[str]:
    script = tmp_path / "backend.py"
    script.write_text(_BACKEND_SCRIPT)
    path = [str(REPO)]
    if fake_tflite_runtime:
        pkg = tmp_path / "fake" / "tflite_runtime"
        pkg.mkdir(parents=True)
        (pkg / "__init__.py").write_text("__version__ = '0.0-fake'\n")
        (pkg / "interpreter.py").write_text(_FAKE_TFLITE_RUNTIME)
        path.append(str(tmp_path / "fake"))
    proc = subprocess.run([SUBPROCESS_PYTHON, str(script), block, *map(str, extra)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_backend_order_tflite_runtime_before_tensorflow(tmp_path):
    out = _run_backend(tmp_path, "ai_edge_litert", fake_tflite_runtime=True)
    assert out == ["tflite-runtime False"]


def test_backend_none_available_is_a_clear_error(tmp_path):
    out = _run_backend(tmp_path, "ai_edge_litert,tflite_runtime,tensorflow")
    assert len(out) == 1
    assert out[0].startswith("ERROR no TFLite interpreter found: pip install ai-edge-litert")


@needs_tf
def test_backend_falls_back_to_tf_lite_last(tmp_path, models, sample_files, clf_fp32):
    image = sample_files[0][0]
    out = _run_backend(tmp_path, "ai_edge_litert,tflite_runtime", models["float32"], image)
    assert out[0] == "tensorflow True"
    assert out[-1] == clf_fp32.predict(image).label


# ------------------------------------------------------------------------------------------------------
# (b) float32 parity with Keras, (c) int8 exact arithmetic
# ------------------------------------------------------------------------------------------------------

@needs_tf
def test_float32_matches_keras(clf_fp32, sample_files, keras_probs):
    probs = np.stack([clf_fp32.predict(p).probabilities for p in sample_files[0]])
    assert probs.dtype == np.float32 and probs.shape == keras_probs.shape
    assert float(np.max(np.abs(probs - keras_probs))) <= 1e-4
    assert np.array_equal(probs.argmax(1), keras_probs.argmax(1))


def _reference_int8(model_path, image, size) -> np.ndarray:
    """Independent reference: the raw interpreter (LiteRT; tflite-runtime on armv7l), quantise + dequantise
    by hand."""
    from wbc_edge.runtime import load_backend

    it = load_backend().interpreter_cls(model_path=str(model_path))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    s_in, zp_in = inp["quantization"]
    s_out, zp_out = out["quantization"]
    x = preprocess(image, size).astype(np.float32)
    q = np.clip(np.round(x / np.float32(s_in) + zp_in), 0, 255).astype(np.uint8)
    it.set_tensor(inp["index"], q[None])
    it.invoke()
    raw = it.get_tensor(out["index"])[0]
    assert raw.dtype == np.uint8
    return (raw.astype(np.float32) - np.float32(zp_out)) * np.float32(s_out)


def test_int8_probabilities_equal_independent_reference(clf_int8, models, sample_files):
    assert clf_int8.input_dtype == np.uint8 and clf_int8.output_dtype == np.uint8
    scale, zp = clf_int8.input_details[0]["quantization"]
    assert abs(scale - 1.0) < 1e-6 and zp == 0  # raw pixels, as the contract says
    for p in sample_files[0][::4]:
        got = clf_int8.predict(p).probabilities
        ref = _reference_int8(models["int8"], p, models["size"])
        assert got.dtype == np.float32
        assert np.array_equal(got, ref), p


@needs_tf
def test_int8_top1_mostly_agrees_with_keras(clf_int8, sample_files, keras_probs):
    probs = np.stack([clf_int8.predict(p).probabilities for p in sample_files[0]])
    agree = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
    print(f"int8 top-1 agreement with Keras {agree:.0%}, "
          f"max |dprob| {np.max(np.abs(probs - keras_probs)):.3g}")
    assert agree >= 0.75, f"int8 top-1 agreement with Keras {agree:.0%}"
    # A tiny model trained from scratch on 40 images quantises far worse than the real one (whose int8
    # parity on 2,057 PBC test images is recorded in export/manifest.json): bound the mean error only.
    assert float(np.mean(np.abs(probs - keras_probs))) < 0.1


def test_quantise_and_dequantise_formulas(clf_int8, monkeypatch):
    pixels = np.array([[0, 1, 2, 127, 128, 254, 255]], dtype=np.uint8)
    # our models: scale 1 / zero point 0 -> the raw pixels
    assert np.array_equal(clf_int8.quantize_input(pixels), pixels)
    # general uint8 / int8 inputs: round(x / scale + zp), clipped to the dtype
    monkeypatch.setattr(clf_int8, "_in_scale", 2.0)
    monkeypatch.setattr(clf_int8, "_in_zp", 3)
    assert clf_int8.quantize_input(pixels).tolist() == [[3, 4, 4, 66, 67, 130, 130]]
    monkeypatch.setattr(clf_int8, "input_dtype", np.dtype(np.int8))
    monkeypatch.setattr(clf_int8, "_in_scale", 1.0)
    monkeypatch.setattr(clf_int8, "_in_zp", -128)
    q = clf_int8.quantize_input(pixels)
    assert q.dtype == np.int8 and q.tolist() == [[-128, -127, -126, -1, 0, 126, 127]]
    monkeypatch.setattr(clf_int8, "_out_scale", 0.5)
    monkeypatch.setattr(clf_int8, "_out_zp", 10)
    deq = clf_int8.dequantize_output(np.array([10, 12, 255], dtype=np.uint8))
    assert deq.dtype == np.float32 and deq.tolist() == [0.0, 1.0, 122.5]


# ------------------------------------------------------------------------------------------------------
# (d) the pixels fed are preprocess's; API shapes and types
# ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["int8", "float32"])
def test_runtime_feeds_exactly_the_preprocess_pixels(models, sample_files, variant, monkeypatch):
    clf = Classifier(models[variant])
    from wbc_edge.runtime import classifier

    assert classifier.preprocess is preprocess  # the one preprocessing path, not a copy
    fed = []
    real_set_tensor = clf.interpreter.set_tensor
    monkeypatch.setattr(clf.interpreter, "set_tensor",
                        lambda i, v: (fed.append(np.array(v)), real_set_tensor(i, v)))
    p = sample_files[0][5]
    clf.predict(p)
    expected = preprocess(p, models["size"])[None]
    assert len(fed) == 1
    assert fed[0].dtype == clf.input_dtype and fed[0].shape == expected.shape
    assert np.array_equal(fed[0], expected.astype(clf.input_dtype))
    # and what the interpreter holds afterwards is the same
    assert np.array_equal(clf.interpreter.get_tensor(clf.input_details[0]["index"]), fed[0])


def test_path_pil_ndarray_and_batch_give_identical_results(clf_int8, sample_files):
    p = sample_files[0][7]
    by_path = clf_int8.predict(p)
    with Image.open(p) as im:
        im.load()
        by_pil = clf_int8.predict(im)
        by_array = clf_int8.predict(np.asarray(im.convert("RGB")))
    by_str = clf_int8.predict(str(p))
    for other in (by_pil, by_array, by_str):
        assert np.array_equal(other.probabilities, by_path.probabilities)
    few = sample_files[0][:3]
    batch = clf_int8.predict_batch(few)
    assert [b.label for b in batch] == [clf_int8.predict(f).label for f in few]
    pix = np.stack([preprocess(f, clf_int8.input_size) for f in few])
    probs = clf_int8.predict_pixels(pix)
    assert probs.dtype == np.float32 and probs.shape == (3, len(CLASSES))
    assert np.array_equal(probs, np.stack([b.probabilities for b in batch]))
    assert np.array_equal(clf_int8.predict_pixels(pix[0]), probs[:1])


def test_prediction_fields_and_top_k(clf_fp32, sample_files):
    pred = clf_fp32.predict(sample_files[0][0])
    assert isinstance(pred, Prediction)
    assert pred.labels == CLASSES == clf_fp32.labels
    assert pred.probabilities.dtype == np.float32 and pred.probabilities.shape == (len(CLASSES),)
    assert abs(float(pred.probabilities.sum()) - 1.0) < 1e-4
    assert pred.index == int(np.argmax(pred.probabilities)) and pred.label == CLASSES[pred.index]
    assert pred.confidence == float(pred.probabilities[pred.index])
    top = pred.top_k(3)
    assert len(top) == 3 and top[0] == (pred.label, pred.confidence)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert len(pred.top_k(99)) == len(CLASSES)
    d = pred.to_dict(2)
    assert d["label"] == pred.label and len(d["top_k"]) == 2 and set(d["probabilities"]) == set(CLASSES)
    json.dumps(d)


def test_top_k_ties_keep_label_order():
    pred = Prediction(label="a", index=0, probabilities=np.array([0.25, 0.5, 0.25], np.float32),
                      confidence=0.5, labels=("a", "b", "c"))
    assert pred.top_k(3) == [("b", 0.5), ("a", 0.25), ("c", 0.25)]


def test_classifier_attributes_threads_and_no_xnnpack(models, clf_int8, sample_files):
    from wbc_edge.runtime import load_backend

    assert clf_int8.backend == load_backend().name and clf_int8.backend_version
    assert clf_int8.backend in ("ai-edge-litert", "tflite-runtime")
    assert clf_int8.contract is not None and clf_int8.contract.variant == "int8"
    assert clf_int8.input_size == models["size"] and clf_int8.load_seconds > 0
    assert tuple(clf_int8.input_details[0]["shape"]) == (1, models["size"], models["size"], 3)
    assert "int8" in clf_int8.describe() and clf_int8.backend in repr(clf_int8)
    p = sample_files[0][1]
    two = Classifier(models["int8"], num_threads=2)
    assert two.num_threads == 2
    assert two.predict(p).label == clf_int8.predict(p).label
    ref = Classifier(models["float32"], use_xnnpack=False)
    assert not ref.use_xnnpack
    fast = Classifier(models["float32"])
    assert np.max(np.abs(ref.predict(p).probabilities - fast.predict(p).probabilities)) < 1e-5
    with pytest.raises(WbcEdgeError, match="num_threads"):
        Classifier(models["int8"], num_threads=0)


# ------------------------------------------------------------------------------------------------------
# (e) errors: one line, naming the file
# ------------------------------------------------------------------------------------------------------

def test_error_missing_and_directory(tmp_path):
    with pytest.raises(ModelFileError, match="not found") as ei:
        Classifier(tmp_path / "nope.tflite")
    _one_line_naming(ei.value, tmp_path / "nope.tflite")
    with pytest.raises(ModelFileError, match="directory") as ei:
        Classifier(tmp_path)
    _one_line_naming(ei.value, tmp_path)


@pytest.mark.parametrize("kind", ["text", "keras-zip", "empty", "image"])
def test_error_not_a_tflite_file(tmp_path, kind, sample_files):
    p = tmp_path / ("model.keras" if kind == "keras-zip" else "model.tflite")
    if kind == "text":
        p.write_text("this is not a model\n")
        expect = "text file"
    elif kind == "keras-zip":
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr("config.json", "{}")
            zf.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
        expect = "zip archive"
    elif kind == "empty":
        p.write_bytes(b"")
        expect = "empty file"
    else:
        p.write_bytes(sample_files[0][0].read_bytes())
        expect = "image file"
    with pytest.raises(ModelFileError, match="not a TFLite model") as ei:
        Classifier(p)
    assert expect in _one_line_naming(ei.value, p)


@pytest.mark.parametrize("cut", ["half", "near-end", "header-only"])
def test_error_truncated_tflite(models, tmp_path, cut):
    fb = strip_contract(models["int8"].read_bytes())
    n = {"half": len(fb) // 2, "near-end": len(fb) - 16, "header-only": 64}[cut]
    p = tmp_path / "truncated.tflite"
    p.write_bytes(fb[:n])
    with pytest.raises(ModelFileError, match="not a loadable TFLite model") as ei:
        Classifier(p, labels=list(CLASSES))
    _one_line_naming(ei.value, p)


def test_model_without_metadata_needs_labels(models, tmp_path, sample_files):
    p = tmp_path / "bare.tflite"
    p.write_bytes(strip_contract(models["int8"].read_bytes()))
    assert read_contract(p) is None
    with pytest.raises(ModelFileError, match=r"has no wbc-edge metadata.*labels=\[") as ei:
        Classifier(p)
    assert "--labels" in _one_line_naming(ei.value, p)
    clf = Classifier(p, labels=list(CLASSES))
    assert clf.contract is None and clf.labels == CLASSES
    ref = Classifier(models["int8"])
    assert np.array_equal(clf.predict(sample_files[0][0]).probabilities,
                          ref.predict(sample_files[0][0]).probabilities)
    renamed = Classifier(p, labels=["B", "E", "L", "M", "N"])
    assert renamed.predict(sample_files[0][0]).label in {"B", "E", "L", "M", "N"}


def test_error_label_count_mismatch(models, tmp_path):
    p = _with_contract(models, tmp_path, "three.tflite", labels=["a", "b", "c"])
    with pytest.raises(ModelFileError, match="3 labels from its embedded contract but the model outputs 5") \
            as ei:
        Classifier(p)
    _one_line_naming(ei.value, p)
    with pytest.raises(ModelFileError, match="2 labels from the labels given") as ei:
        Classifier(models["int8"], labels=["x", "y"])
    with pytest.raises(ModelFileError, match="unique"):
        Classifier(models["int8"], labels=["a", "a", "b", "c", "d"])


def test_error_contract_input_size_mismatch(models, tmp_path):
    p = _with_contract(models, tmp_path, "size.tflite", input_size=models["size"] + 32)
    with pytest.raises(ModelFileError, match=f"input_size {models['size'] + 32}") as ei:
        Classifier(p)
    _one_line_naming(ei.value, p)


@pytest.mark.parametrize("changes", [{"input_size": "abc"}, {"input_size": None}, {"input_dtype": None},
                                     {"output_scale": "x"}])
def test_error_contract_field_of_wrong_type(models, tmp_path, changes):
    """Corrupt metadata values: a one-line ModelFileError naming the file (was ValueError / TypeError)."""
    p = _with_contract(models, tmp_path, "wrongtype.tflite", **changes)
    (field,) = changes
    with pytest.raises(ModelFileError, match=f"embedded contract field '{field}' must be") as ei:
        Classifier(p)
    _one_line_naming(ei.value, p)


def test_error_contract_dtype_mismatch(models, tmp_path):
    p = _with_contract(models, tmp_path, "dtype.tflite", input_dtype="float32")
    with pytest.raises(ModelFileError, match="input dtype float32") as ei:
        Classifier(p)
    _one_line_naming(ei.value, p)


def test_error_corrupt_embedded_contract(models, tmp_path):
    data = strip_contract(models["int8"].read_bytes())
    c = read_contract(models["int8"])
    good = embed_contract(data, c)
    bad = good.replace(b'"labels"', b'"lab\xffls"', 1)  # same length: still a zip, contract JSON broken
    p = tmp_path / "badmeta.tflite"
    p.write_bytes(bad)
    with pytest.raises(ModelFileError) as ei:
        Classifier(p)
    _one_line_naming(ei.value, p)


@needs_tf
def test_error_wrong_input_shape(tmp_path):
    from wbc_edge.core.tfcompat import import_tf

    tf, _ = import_tf()

    @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 1], tf.float32)])
    def grey(x):
        return tf.nn.softmax(tf.reshape(x, [1, 64])[:, :5])

    blob = tf.lite.TFLiteConverter.from_concrete_functions([grey.get_concrete_function()], grey).convert()
    p = tmp_path / "grey.tflite"
    p.write_bytes(blob)
    with pytest.raises(ModelFileError, match=r"expected input shape \(1, S, S, 3\).*\(1, 8, 8, 1\)") as ei:
        Classifier(p, labels=list(CLASSES))
    _one_line_naming(ei.value, p)


def test_error_undecodable_image(clf_int8, tmp_path):
    bad = tmp_path / "cell.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(BadImageError) as ei:
        clf_int8.predict(bad)
    _one_line_naming(ei.value, bad)
    with pytest.raises(BadImageError):
        clf_int8.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(WbcEdgeError, match="uint8"):
        clf_int8.predict_pixels(np.zeros((1, clf_int8.input_size, clf_int8.input_size, 3), np.float32))
    with pytest.raises(WbcEdgeError, match=r"\(N, "):
        clf_int8.predict_pixels(np.zeros((1, 7, 7, 3), np.uint8))


def test_find_images_expands_folders_sorted_recursive(tmp_path):
    (tmp_path / "b" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in ("b/2.jpg", "b/deep/1.PNG", "a.jpeg", "notes.txt", ".hidden/x.jpg", "b/.y.jpg"):
        (tmp_path / rel).write_bytes(b"x")
    single = tmp_path / "notes.txt"
    found = runtime.find_images([tmp_path, single])
    rel = [f.relative_to(tmp_path).as_posix() for f in found]
    assert rel == ["a.jpeg", "b/2.jpg", "b/deep/1.PNG", "notes.txt"]


# ------------------------------------------------------------------------------------------------------
# (f) the CLI
# ------------------------------------------------------------------------------------------------------

@pytest.fixture()
def cli():
    from click.testing import CliRunner

    from wbc_edge.cli import main

    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def clf_cascade(models) -> Classifier:
    """What `predict` runs by default on a quantised file with a float file beside it: the cascade (issue 32)."""
    return Classifier(models["int8"], fallback=models["float32"])


def test_cli_table(cli, models, sample_files, clf_cascade):
    clf_int8 = clf_cascade
    imgs = sample_files[0][:2]
    res = cli("predict", models["int8"], *imgs)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("# tiny_int8.tflite: int8")
    assert lines[0].endswith("re-run in tiny_float32.tflite")  # the cascade: the float file beside it (issue 32)
    assert lines[1].split()[:7] == ["file", "label", "conf", "decision", "zoom", "fallback", "top-3"]
    assert len(lines) == 4
    for img, line in zip(imgs, lines[2:], strict=True):
        pred = clf_int8.predict(img)
        assert line.startswith(str(img)) and f" {pred.label} " in line
        assert f"{pred.confidence:.1%}" in line and line.count(",") == 2
        assert (" uncertain " in line) == pred.uncertain  # the decision column: refused when not confident
    assert res.stderr == ""


def test_cli_json_top_k_threads(cli, models, sample_files, clf_cascade):
    clf_int8 = clf_cascade
    imgs = sample_files[0][:3]
    res = cli("predict", models["int8"], *imgs, "--json", "--top-k", "2", "--threads", "2")
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in res.stdout.splitlines()]
    assert [r["file"] for r in recs] == [str(p) for p in imgs]
    for r, img in zip(recs, imgs, strict=True):
        pred = clf_int8.predict(img)
        assert r["label"] == pred.label and r["index"] == pred.index
        assert r["confidence"] == pytest.approx(pred.confidence)
        assert len(r["top_k"]) == 2 and r["top_k"][0]["label"] == pred.label
        assert list(r["probabilities"]) == list(CLASSES)
    res = cli("predict", models["int8"], imgs[0], "--json", "--top-k", "50")
    assert len(json.loads(res.stdout)["top_k"]) == len(CLASSES)


def test_cli_folder_argument(cli, models, sample_root):
    folder = sample_root / "basophil"
    res = cli("predict", models["float32"], folder, "--json")
    assert res.exit_code == 0, res.output
    files = [json.loads(x)["file"] for x in res.stdout.splitlines()]
    expected = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in runtime.IMAGE_SUFFIXES)
    assert files == expected and len(files) > 0


def test_cli_bad_image_among_good_ones(cli, models, sample_files, tmp_path):
    good = sample_files[0][:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    res = cli("predict", models["int8"], good[0], bad, good[1])
    assert res.exit_code == 1
    body = res.stdout.splitlines()[2:]
    assert len(body) == 2 and body[0].startswith(str(good[0])) and body[1].startswith(str(good[1]))
    err = res.stderr.strip().splitlines()
    assert err[0] == f"Error: {bad}: not an image (cannot identify image file)"
    assert err[-1] == "Error: 1 of 3 image(s) could not be classified (see above)"


def test_cli_usage_errors(cli, models, tmp_path, sample_files):
    res = cli("predict", models["int8"], tmp_path / "missing.jpg")
    assert res.exit_code == 2 and "does not exist" in res.output
    res = cli("predict", tmp_path / "missing.tflite", sample_files[0][0])
    assert res.exit_code == 2
    res = cli("predict", models["int8"])
    assert res.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("predict", models["int8"], empty)
    assert res.exit_code == 2 and "no image files" in res.output


def test_cli_model_errors_and_labels_option(cli, models, tmp_path, sample_files):
    text = tmp_path / "m.tflite"
    text.write_text("hello")
    res = cli("predict", text, sample_files[0][0])
    assert res.exit_code == 1 and res.stderr.startswith(f"Error: {text}: not a TFLite model")
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(strip_contract(models["int8"].read_bytes()))
    res = cli("predict", bare, sample_files[0][0])
    assert res.exit_code == 1 and "--labels" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = cli("predict", bare, sample_files[0][0], "--json", "--labels", ",".join(CLASSES))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["label"] in CLASSES
