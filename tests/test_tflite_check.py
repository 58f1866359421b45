"""wbc_edge.runtime.tflite_check: the pure-Python bounds check the runtime runs before any interpreter sees a file
(tflite-runtime 2.14, the 32-bit Pi interpreter, segfaults on truncated models - seen under armv7l
emulation).  Every shipped model passes; truncated / dangling files get one line instead of a crash."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from wbc_edge.core.labels import WBC5 as CLASSES
from wbc_edge.core.contract import strip_contract
from wbc_edge.core.errors import ModelFileError
from wbc_edge.runtime.tflite_check import flatbuffer_problem

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "export").glob("*.tflite")) + [REPO / "android_assets" / "wbc_int8.tflite",
                                                         REPO / "export" / "gate" / "wbc_gate.tflite"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_models_pass(path):
    assert flatbuffer_problem(strip_contract(path.read_bytes())) is None


def test_tiny_models_pass(tiny_tflite):
    for v in ("float32", "int8"):
        assert flatbuffer_problem(strip_contract(Path(tiny_tflite[v]).read_bytes())) is None


@pytest.mark.parametrize("cut", [9, 64, 4096, 0.5, 0.99, -16])
def test_truncated_flatbuffers_are_caught(cut):
    fb = strip_contract((REPO / "export" / "wbc_int8.tflite").read_bytes())
    n = cut if isinstance(cut, int) and cut > 0 else (len(fb) + cut if isinstance(cut, int) else int(len(fb) * cut))
    problem = flatbuffer_problem(fb[:n])
    assert problem and "outside" in problem, problem


def test_dangling_index_is_caught():
    """A tensor pointing at a buffer that does not exist (an interpreter would read out of bounds)."""
    from ai_edge_litert import schema_py_generated as schema

    fb = bytearray(strip_contract((REPO / "export" / "wbc_int8.tflite").read_bytes()))
    model = schema.Model.GetRootAs(bytes(fb), 0)
    tensor = model.Subgraphs(0).Tensors(3)
    o = tensor._tab.Offset(8)  # Tensor.buffer (slot 2)
    assert o
    struct.pack_into("<I", fb, tensor._tab.Pos + o, 10_000)
    assert "refers to buffer 10000" in flatbuffer_problem(bytes(fb))


def test_runtime_refuses_truncated_model_before_the_interpreter(tmp_path):
    from wbc_edge.runtime import Classifier

    fb = strip_contract((REPO / "export" / "wbc_int8.tflite").read_bytes())
    p = tmp_path / "half.tflite"
    p.write_bytes(fb[: len(fb) // 2])
    with pytest.raises(ModelFileError) as ei:
        Classifier(p, labels=list(CLASSES))
    msg = str(ei.value)
    assert msg.startswith(f"{p}: not a loadable TFLite model (corrupt or truncated?): ") and "\n" not in msg
