"""wbc_edge.export.metadata_* / `wbc-edge metadata`: standard TFLite metadata (MediaPipe Tasks, TFLite Task
Library, Android Studio) on copies of the shipped models: valid per the official schema, the model itself
unchanged, our contract kept byte for byte and readable with zipfile alone, deterministic and idempotent,
records (manifest.json, Android bundle) kept consistent, one-line errors naming the file, and the runtime
never importing flatbuffers / MediaPipe.  No TensorFlow, no MediaPipe needed (tests/test_mediapipe.py runs
the real client)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import import_blocker, without_metadata


from wbc_edge.core.labels import WBC5
from wbc_edge.core.contract import CONTRACT_NAME, LABELS_NAME, read_contract, strip_contract
from wbc_edge.core.errors import ModelFileError, WbcEdgeError
from wbc_edge.export.metadata_files import embed_metadata, with_metadata
from wbc_edge.export.metadata_read import check_standard_metadata, has_standard_metadata, read_standard_metadata
from wbc_edge.export.metadata_write import add_standard_metadata, build_metadata

REPO = Path(__file__).resolve().parents[1]
EXPORT = REPO / "export"
ANDROID = REPO / "android_assets"
#: Every variant the shipped manifest lists (six since issue 14 added int8_mixed).
VARIANTS = tuple(v["variant"] for v in json.loads((EXPORT / "manifest.json").read_text())["variants"])


def _sha(p: Path) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory) -> dict:
    """Copies of export/ and android_assets/, first without the standard metadata (as exported before it),
    then with it added through the CLI (the shipped files themselves are never touched)."""
    base = tmp_path_factory.mktemp("shipped")
    exp, andr, bare = base / "export", base / "android_assets", base / "bare"
    shutil.copytree(EXPORT, exp)
    shutil.copytree(ANDROID, andr)
    bare.mkdir()
    for p in list(exp.glob("*.tflite")) + [andr / "wbc_int8.tflite"]:
        p.write_bytes(without_metadata(p.read_bytes()))
        assert not has_standard_metadata(p)
        if p.parent == exp:
            (bare / p.name).write_bytes(p.read_bytes())
    before = {p.name: p.read_bytes() for p in exp.glob("*.tflite")}
    from wbc_edge.cli import main

    files = [str(exp / f"wbc_{v}.tflite") for v in VARIANTS] + [str(andr / "wbc_int8.tflite")]
    res = CliRunner().invoke(main, ["metadata", "add", *files])
    assert res.exit_code == 0, res.output
    return {"export": exp, "android": andr, "before": before, "output": res.output, "bare": bare}


@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_variant_gets_valid_standard_metadata(shipped_copy, variant):
    path = shipped_copy["export"] / f"wbc_{variant}.tflite"
    assert has_standard_metadata(path) and has_standard_metadata(EXPORT / path.name)  # shipped files carry it
    assert check_standard_metadata(path) == []
    meta = read_standard_metadata(path)
    assert meta["name"] == f"wbc-edge white-blood-cell classifier ({variant})"
    assert meta["minParserVersion"] == "1.0.0" and meta["author"] and "Apache-2.0" in meta["license"]
    sub = meta["subgraphMetadata"][0]
    inp, out = sub["inputTensorMetadata"][0], sub["outputTensorMetadata"][0]
    assert inp["content"] == {"contentPropertiesType": "ImageProperties", "contentProperties": {"colorSpace": "RGB"}}
    assert inp["processUnits"] == [{"optionsType": "NormalizationOptions", "options": {"mean": [0.0], "std": [1.0]}}]
    assert inp["stats"] == {"min": [0.0], "max": [255.0]}
    assert out["associatedFiles"][0]["name"] == LABELS_NAME and out["associatedFiles"][0]["type"] == "TENSOR_AXIS_LABELS"
    assert out["stats"]["max"] == ([255.0] if variant in ("int8", "qat_int8", "int8_mixed", "int8_plain") else [1.0])
    assert [f["name"] for f in meta["associatedFiles"]] == [CONTRACT_NAME]


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_unchanged_and_contract_kept_byte_for_byte(shipped_copy, variant, sample_files):
    from wbc_edge.runtime import Classifier

    name = f"wbc_{variant}.tflite"
    old, new = shipped_copy["before"][name], (shipped_copy["export"] / name).read_bytes()
    # the contract zip after the flatbuffer is the very same bytes; readable with zipfile alone
    assert new[len(strip_contract(new)):] == old[len(strip_contract(old)):]
    zf = zipfile.ZipFile(io.BytesIO(new[len(strip_contract(new)):]))
    assert zf.read(LABELS_NAME).decode().split() == list(WBC5)
    assert json.loads(zf.read(CONTRACT_NAME))["variant"] == variant
    assert all(i.compress_type == zipfile.ZIP_STORED and i.date_time == (2020, 1, 1, 0, 0, 0) for i in zf.infolist())
    assert read_contract(new) == read_contract(old)
    # same predictions, bit for bit
    images = sample_files[0][::8]
    a = Classifier(EXPORT / name, num_threads=1).predict_batch(images)
    b = Classifier(shipped_copy["export"] / name, num_threads=1).predict_batch(images)
    assert all(np.array_equal(x.probabilities, y.probabilities) for x, y in zip(a, b, strict=True))


def test_records_updated_and_bundle_consistent(shipped_copy):
    from wbc_edge.export.android import check_android_bundle

    exp, andr = shipped_copy["export"], shipped_copy["android"]
    m = json.loads((exp / "manifest.json").read_text())
    for v in m["variants"]:
        f = exp / v["file"]
        assert v["sha256"] == _sha(f) and v["bytes"] == f.stat().st_size
        assert v["flatbuffer_sha256"] == hashlib.sha256(strip_contract(f.read_bytes())).hexdigest()
        assert v["tflite_metadata"]["min_parser_version"] == "1.0.0"
        assert v["parity"]["n"] >= 2000  # the rest of the entry is untouched
    assert check_android_bundle(andr) == []
    assert _sha(andr / "wbc_int8.tflite") == _sha(exp / "wbc_int8.tflite")
    bundle = json.loads((andr / "wbc_model.json").read_text())
    assert bundle["sha256"] == _sha(andr / "wbc_int8.tflite") and bundle["tflite_metadata"]
    readme = (andr / "README.md").read_text()
    assert "ImageClassifier" in readme and "carries the standard TFLite metadata" in readme
    assert bundle["sha256"] in readme
    # the shipped bundle carries the metadata too (added with `wbc-edge metadata add`), and its README says so
    assert "carries the standard TFLite metadata" in (ANDROID / "README.md").read_text()


def test_idempotent_and_deterministic(shipped_copy):
    path = shipped_copy["export"] / "wbc_int8.tflite"
    data = path.read_bytes()
    assert with_metadata(data) == data                      # adding it again changes nothing
    info = embed_metadata(path)
    assert info["changed"] is False and info["records"] == [] and path.read_bytes() == data
    old = shipped_copy["before"]["wbc_int8.tflite"]
    contract = read_contract(old)
    a = add_standard_metadata(strip_contract(old), contract)
    b = add_standard_metadata(strip_contract(old), contract, verify=False)
    assert a == b == strip_contract(data)                   # same input -> same bytes (re-export identical)
    # nothing machine-specific in the flatbuffer: versions / platform stay in the contract zip
    assert contract.versions["platform"].encode() not in a
    assert contract.versions["platform"].encode() in data


def test_buffers_stay_16_byte_aligned(shipped_copy):
    from ai_edge_litert import schema_py_generated as schema

    for v in ("float32", "int8"):
        flat = strip_contract((shipped_copy["export"] / f"wbc_{v}.tflite").read_bytes())
        model = schema.Model.GetRootAs(flat, 0)
        starts = []
        for i in range(model.BuffersLength()):
            tab = model.Buffers(i)._tab
            o = tab.Offset(4)
            if o and tab.VectorLen(o):
                starts.append(tab.Vector(o))
        assert len(starts) > 50 and all(s % 16 == 0 for s in starts), v


def test_calibration_fields_are_described():
    c = read_contract(EXPORT / "wbc_float32.tflite")
    c.temperature = c.abstain_threshold = None  # as in a contract exported before calibration existed
    assert "temperature" not in build_metadata(c, input_dtype="float32", output_dtype="float32").decode("latin-1")
    c.temperature = 1.75  # the field a calibrated contract carries (issue 11); the schema has no slot for it
    text = build_metadata(c, input_dtype="float32", output_dtype="float32").decode("latin-1")
    assert "temperature 1.75" in text and "uncalibrated softmax" in text


# --------------------------------------------------------------------------------------------- errors

def test_bad_inputs_are_one_line_errors_naming_the_file(tmp_path):
    text = tmp_path / "notes.tflite"
    text.write_text("not a model\n")
    with pytest.raises(ModelFileError, match=r"notes\.tflite: not a TFLite model"):
        embed_metadata(text)
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(strip_contract((EXPORT / "wbc_int8.tflite").read_bytes()))
    with pytest.raises(ModelFileError, match=r"bare\.tflite: has no wbc-edge contract"):
        embed_metadata(bare)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes((EXPORT / "wbc_int8.tflite").read_bytes()[:4096])
    with pytest.raises(ModelFileError, match=r"truncated\.tflite: "):
        embed_metadata(truncated)
    with pytest.raises(ModelFileError, match=r"missing\.tflite: model file not found"):
        embed_metadata(tmp_path / "missing.tflite")
    c = read_contract(EXPORT / "wbc_int8.tflite")
    c.labels = c.labels[:4]
    with pytest.raises(ModelFileError, match=r"x\.tflite: model and contract disagree: output shape \[1, 5\]"):
        add_standard_metadata(strip_contract((EXPORT / "wbc_int8.tflite").read_bytes()), c, source="x.tflite")
    c = read_contract(EXPORT / "wbc_int8.tflite")
    c.input_dtype = "float32"
    with pytest.raises(ModelFileError, match="contract says input dtype float32, the model's is uint8"):
        add_standard_metadata(strip_contract((EXPORT / "wbc_int8.tflite").read_bytes()), c)
    for f in (text, bare, truncated):  # nothing was written over a bad input
        assert f.exists()
    assert bare.read_bytes() == strip_contract((EXPORT / "wbc_int8.tflite").read_bytes())


def test_cli_show_and_errors(shipped_copy, tmp_path):
    from wbc_edge.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["metadata", "show", str(shipped_copy["export"] / "wbc_float32.tflite")])
    assert res.exit_code == 0 and "NormalizationOptions" not in res.output
    assert "normalisation {'mean': [0.0], 'std': [1.0]}" in res.output and "labels.txt (TENSOR_AXIS_LABELS)" in res.output
    res = runner.invoke(main, ["metadata", "show", "--json", str(shipped_copy["export"] / "wbc_int8.tflite")])
    assert res.exit_code == 0 and json.loads(res.output)["minParserVersion"] == "1.0.0"
    res = runner.invoke(main, ["metadata", "show", str(shipped_copy["bare"] / "wbc_int8.tflite")])
    assert res.exit_code == 1
    err = res.output.strip().splitlines()
    assert len(err) == 1 and "wbc_int8.tflite: no standard TFLite metadata" in err[0]
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"PK\x03\x04 a zip, not a model")
    res = runner.invoke(main, ["metadata", "add", str(bad)])
    assert res.exit_code == 1 and res.output.strip().count("\n") == 0 and "bad.tflite: not a TFLite model" in res.output
    assert runner.invoke(main, ["metadata", "add", str(tmp_path / "nope.tflite")]).exit_code == 2


def test_embed_is_atomic_on_failure(shipped_copy, tmp_path, monkeypatch):
    """A crash while writing leaves the previous file intact (atomic write)."""
    import wbc_edge.core.atomic as atomic_mod

    f = tmp_path / "wbc_int8.tflite"
    f.write_bytes(shipped_copy["before"]["wbc_int8.tflite"])
    before = f.read_bytes()

    def boom(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_mod, "write_bytes", boom)
    with pytest.raises(OSError):
        embed_metadata(f)
    assert f.read_bytes() == before and not [p for p in tmp_path.iterdir() if p.name != f.name]


# --------------------------------------------------------------------------------------------- runtime

_RUNTIME_SCRIPT = import_blocker('("tensorflow", "tf_keras", "keras", "flatbuffers", "mediapipe", "cv2")') + \
    textwrap.dedent("""
    import json
    from wbc_edge.runtime import Classifier
    old = Classifier(sys.argv[1]).predict(sys.argv[3])
    new = Classifier(sys.argv[2]).predict(sys.argv[3])
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "flatbuffers", "mediapipe", "cv2"})
    print(json.dumps({"old": old.label, "new": new.label, "same": old.probabilities.tolist() ==
                      new.probabilities.tolist(), "heavy": heavy,
                      "export": sorted(m for m in sys.modules if m.startswith("wbc_edge.export"))}))
""")


def test_runtime_reads_old_and_new_models_without_flatbuffers_or_mediapipe(shipped_copy, sample_files, tmp_path):
    script = tmp_path / "rt.py"
    script.write_text(_RUNTIME_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(EXPORT / "wbc_int8.tflite"),
                           str(shipped_copy["export"] / "wbc_int8.tflite"), str(sample_files[0][0])],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"old": WBC5[0], "new": WBC5[0], "same": True, "heavy": [], "export": []}


def test_missing_flatbuffers_is_a_clear_error(monkeypatch):
    import builtins

    import wbc_edge.export.metadata_write as tm

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "flatbuffers" or name.startswith("flatbuffers.") or "metadata_schema_py_generated" in name \
                or (a and a[2] and "metadata_schema_py_generated" in a[2]):
            raise ImportError("No module named 'flatbuffers'")
        return real(name, *a, **k)

    monkeypatch.delitem(sys.modules, "wbc_edge.vendor.metadata_schema_py_generated", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(WbcEdgeError, match="needs the 'flatbuffers' package"):
        tm.build_metadata(read_contract(EXPORT / "wbc_int8.tflite"), input_dtype="uint8", output_dtype="uint8")
