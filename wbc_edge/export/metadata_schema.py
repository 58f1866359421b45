"""The two flatbuffer schemas standard TFLite metadata involves, and the low-level helpers around them.

The metadata schema (`ModelMetadata`, identifier M001) is the flatc-generated module vendored in
`wbc_edge.vendor` (MediaPipe 1.2.2, Apache-2.0) + the `flatbuffers` package; the TFLite *model* schema is
the one the interpreter ships (`ai_edge_litert`, else TensorFlow).  Export-time only: `wbc_edge.runtime`
never imports this package.  See `wbc_edge.export.metadata_write` for what is written and why.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from ..core.contract import strip_contract
from ..core.errors import ModelFileError, WbcEdgeError, first_line

METADATA_FIELD_NAME = "TFLITE_METADATA"   # Model.metadata entry name every TFLite metadata reader looks for
METADATA_IDENTIFIER = b"M001"             # file identifier of the metadata schema
TFLITE_IDENTIFIER = b"TFL3"
NORM_MEAN = (0.0,)                        # (pixel - mean) / std = pixel: the model takes raw 0..255 pixels
NORM_STD = (1.0,)
BUFFER_ALIGNMENT = 16                     # schema.fbs: Buffer.data (force_align: 16)


def metadata_schema():
    try:
        from ..vendor import metadata_schema_py_generated as md
    except ImportError as exc:  # flatbuffers missing
        raise WbcEdgeError(f"writing TFLite metadata needs the 'flatbuffers' package ({first_line(exc)}): "
                           "pip install flatbuffers (it comes with the [train] extra)") from None
    return md


def model_schema():
    """The TFLite model schema module (flatc-generated) that ships with the interpreter / converter."""
    failures = []
    for name in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
        try:
            import importlib

            return importlib.import_module(name)
        except ImportError as exc:
            failures.append(f"{name} ({first_line(exc)})")
    raise WbcEdgeError("writing TFLite metadata needs the TFLite model schema from ai-edge-litert or "
                       "TensorFlow, and the 'flatbuffers' package; tried " + "; ".join(failures))


def aligned_buffer_class(schema):
    """BufferT whose data vector is 16-byte aligned (schema.fbs `force_align: 16`, honoured by the C++ writer
    the converter uses; the Python generated code aligns to 1)."""

    class AlignedBufferT(schema.BufferT):
        def Pack(self, builder):
            data = None
            if self.data is not None:
                raw = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def unpack_model(schema, flat: bytes, source: str):
    try:
        return schema.ModelT.InitFromObj(schema.Model.GetRootAs(flat, 0))
    except Exception as exc:  # noqa: BLE001 - any parse failure of a damaged flatbuffer
        raise ModelFileError(f"{source}: not a readable TFLite flatbuffer (truncated or corrupt?): "
                             f"{type(exc).__name__}: {first_line(exc)}") from None


def source_bytes(source) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>", bytes(source)
    p = Path(source)
    if not p.exists():
        raise ModelFileError(f"{p}: model file not found")
    if p.is_dir():
        raise ModelFileError(f"{p}: is a directory, expected a .tflite file")
    try:
        return str(p), p.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{p}: cannot read model file ({exc.strerror or first_line(exc)})") from None


def zip_files(data: bytes) -> dict[str, bytes]:
    flat = strip_contract(data)
    if len(flat) == len(data):
        return {}
    with zipfile.ZipFile(io.BytesIO(data[len(flat):])) as zf:
        return {i.filename: zf.read(i.filename) for i in zf.infolist()}
