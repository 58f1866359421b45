"""The one preprocessing path and the embedded model contract: TF-free, deterministic, round-trips."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import import_blocker
from PIL import Image

from wbc_edge.core.contract import ModelContract, embed_contract, read_contract, strip_contract
from wbc_edge.core.errors import BadImageError, ModelFileError
from wbc_edge.core.preprocess import preprocess, preprocess_batch

REPO = Path(__file__).resolve().parents[1]

BLOCK_TF = import_blocker()


def test_preprocess_and_contract_import_without_tensorflow(sample_files):
    img = sample_files[0][0]
    code = BLOCK_TF + textwrap.dedent(f"""
        from wbc_edge.core.preprocess import preprocess
        from wbc_edge.core.contract import read_contract, ModelContract
        x = preprocess({str(img)!r}, 224)
        assert x.shape == (224, 224, 3) and x.dtype.name == "uint8"
        assert not any(m.split(".")[0] in ("tensorflow", "tf_keras", "keras") for m in sys.modules)
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_same_pixels_from_path_pil_and_array(sample_files):
    path = sample_files[0][0]
    a = preprocess(path, 96)
    with Image.open(path) as im:
        b = preprocess(im, 96)
        full = np.asarray(im.convert("RGB"))
    c = preprocess(full, 96)
    assert a.dtype == np.uint8 and a.shape == (96, 96, 3)
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(preprocess_batch([path, path], 96)[1], a)


def test_preprocess_is_bit_stable(sample_files):
    """A fixed digest: Pillow's fixed-point bilinear resize is the same on x86 and ARM, so this guards
    against an accidental change of the preprocessing (resample filter, colour conversion, size)."""
    path = sample_files[0][0]
    x = preprocess(path, 224)
    assert np.array_equal(x, preprocess(path, 224))
    # Resizing is antialiased bilinear straight to (size, size): compare against Pillow directly.
    with Image.open(path) as im:
        ref = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR))
    assert np.array_equal(x, ref)
    assert hashlib.sha256(x.tobytes()).hexdigest() == hashlib.sha256(ref.tobytes()).hexdigest()


def test_float_arrays_are_refused():
    with pytest.raises(BadImageError, match="uint8"):
        preprocess(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(BadImageError, match="shape"):
        preprocess(np.zeros((10, 10, 5), np.uint8))


def test_contract_round_trip_and_strip():
    fake = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4
    c = ModelContract(input_size=96, variant="int8", input_dtype="uint8", input_scale=1.0, input_zero_point=0)
    blob = embed_contract(fake, c)
    assert blob.startswith(fake)
    back = read_contract(blob)
    assert back == c
    assert strip_contract(blob) == fake
    # Re-embedding replaces, never stacks, and is byte-identical (reproducible sha256).
    assert embed_contract(blob, c) == blob
    assert read_contract(fake) is None


@pytest.mark.parametrize("field,value,expect", [
    ("input_size", "abc", "'input_size' must be a positive integer"),
    ("input_size", None, "'input_size' must be a positive integer"),
    ("input_size", 0, "'input_size' must be a positive integer"),
    ("labels", ["a", 1], "labels must be a list of strings"),
    ("labels", "abcde", "labels must be a list of strings"),
    ("input_dtype", None, "'input_dtype' must be a string"),
    ("output_dtype", 8, "'output_dtype' must be a string"),
    ("input_scale", "1.0", "'input_scale' must be a number or null"),
    ("output_scale", [], "'output_scale' must be a number or null"),
    ("input_zero_point", 0.5, "'input_zero_point' must be an integer or null"),
    ("output_zero_point", "0", "'output_zero_point' must be an integer or null"),
    ("pixel_range", [0], "'pixel_range' must be two integers"),
    ("pixel_range", None, "'pixel_range' must be two integers"),
    ("pixel_range", [0, "255"], "'pixel_range' must be two integers"),
])
def test_contract_field_types_are_validated(field, value, expect):
    """Corrupt metadata is a one-line ModelFileError naming the file, not a TypeError/ValueError later."""
    import json

    raw = json.loads(ModelContract(input_scale=1.0, input_zero_point=0).to_json())
    raw[field] = value
    with pytest.raises(ModelFileError, match=expect) as ei:
        ModelContract.from_json(json.dumps(raw), source="m.tflite")
    msg = str(ei.value)
    assert msg.startswith("m.tflite: ") and "\n" not in msg
    # valid values of every kind still load (None scales / zero points, an int scale becomes float)
    raw = json.loads(ModelContract().to_json())
    raw.update(input_scale=1, input_zero_point=0, output_scale=None, output_zero_point=None)
    c = ModelContract.from_json(json.dumps(raw))
    assert c.input_scale == 1.0 and isinstance(c.input_scale, float) and c.pixel_range == (0, 255)


def test_first_line():
    from wbc_edge.core.errors import first_line

    assert first_line(ValueError("  one\ntwo\n")) == "one"
    assert first_line(ValueError()) == "ValueError"
    assert first_line("\n  text line  \nmore") == "text line"
    assert first_line("") == ""


def test_contract_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        read_contract(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelFileError, match="not found"):
        read_contract(tmp_path / "missing.tflite")
    with pytest.raises(ModelFileError, match="not a TFLite flatbuffer"):
        embed_contract(b"hello world", ModelContract())
