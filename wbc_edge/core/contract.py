"""The model contract: labels + input contract that travel inside every exported .tflite file.

Format: the TFLite flatbuffer followed by a ZIP archive holding `wbc_edge_contract.json` and `labels.txt`.
This is the "associated files" layout of TFLite metadata (TFLite Support / Model Maker append a zip the
same way): interpreters ignore the trailing bytes, while anyone can read them back with `zipfile` - no
TensorFlow, no flatbuffers.  Android reads `labels.txt` from the bundle in `android_assets/` instead.

Imported by export (writes) and runtime (reads); it must stay free of TensorFlow.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelFileError
from .labels import WBC5
from .preprocess import DEFAULT_SIZE

CONTRACT_NAME = "wbc_edge_contract.json"
LABELS_NAME = "labels.txt"
CONTRACT_VERSION = 1
TFLITE_IDENTIFIER = b"TFL3"


@dataclass
class ModelContract:
    """What a caller must feed the model and how to read its output.

    Inputs are always RGB pixels in 0..255 from `wbc_edge.core.preprocess.preprocess`, NHWC, batch 1;
    float models take them as float32, integer models as uint8/int8 via `input_scale`/`input_zero_point`
    (for our uint8 models scale 1.0 / zero point 0, i.e. raw pixels).
    """

    #: The model's class names in output order.  Export always writes the model's own list (from its run);
    #: a file read back always has one (`from_json` requires it).  The default - the five WBC classes of
    #: every model made before labels were stored - only serves code that builds a contract by hand.
    labels: list[str] = field(default_factory=lambda: list(WBC5))
    input_size: int = DEFAULT_SIZE
    variant: str = "float32"
    channel_order: str = "RGB"
    layout: str = "NHWC"
    pixel_range: tuple[int, int] = (0, 255)
    normalisation: str = "in-graph: x / 127.5 - 1 (MobileNetV2)"
    preprocess: str = ""
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    input_scale: float | None = None
    input_zero_point: int | None = None
    output_scale: float | None = None
    output_zero_point: int | None = None
    output: str = "softmax probabilities, one per label, in label order"
    source_model_sha256: str | None = None
    split_manifest_sha256: str | None = None
    versions: dict = field(default_factory=dict)
    contract_version: int = CONTRACT_VERSION
    #: Confidence calibration (wbc_edge.core.calibration), None in models exported before it existed:
    #: calibrated p = softmax(log(p) / temperature); below abstain_threshold the prediction is "uncertain".
    temperature: float | None = None
    abstain_threshold: float | None = None
    #: The scale guard (`wbc_edge.core.scale_guard.ScaleGuard.to_dict()`), None in models exported before it existed:
    #: the runtime magnifies an image whose nucleus is far smaller than the training cells' before inference.
    scale_guard: dict | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, source: str = "<contract>") -> ModelContract:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{source}: embedded contract is not valid JSON ({exc})") from None
        if not isinstance(raw, dict) or "labels" not in raw:
            raise ModelFileError(f"{source}: embedded contract has no labels")
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in known}
        if not isinstance(kwargs["labels"], list) or not all(isinstance(x, str) for x in kwargs["labels"]):
            raise ModelFileError(f"{source}: embedded labels must be a list of strings")
        for name, value in kwargs.items():
            problem = _field_problem(name, value)
            if problem:
                raise ModelFileError(f"{source}: embedded contract field '{name}' must be {problem}, got "
                                     f"{_short(value)}")
        if "pixel_range" in kwargs:
            kwargs["pixel_range"] = tuple(kwargs["pixel_range"])
        for name in ("input_scale", "output_scale", "temperature", "abstain_threshold"):
            if kwargs.get(name) is not None:
                kwargs[name] = float(kwargs[name])
        return cls(**kwargs)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


_STR_FIELDS = ("variant", "channel_order", "layout", "normalisation", "preprocess", "input_dtype",
               "output_dtype", "output")


def _field_problem(name: str, v) -> str | None:
    """What a contract field's JSON value must be, when it is not that (None when it is fine)."""
    if name == "input_size":
        return None if _is_int(v) and v > 0 else "a positive integer"
    if name in _STR_FIELDS:
        return None if isinstance(v, str) else "a string"
    if name in ("input_scale", "output_scale"):
        return None if v is None or _is_number(v) else "a number or null"
    if name in ("input_zero_point", "output_zero_point"):
        return None if v is None or _is_int(v) else "an integer or null"
    if name == "pixel_range":
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_int(x) for x in v)
        return None if ok else "two integers [low, high]"
    if name in ("source_model_sha256", "split_manifest_sha256"):
        return None if v is None or isinstance(v, str) else "a string or null"
    if name == "versions":
        return None if isinstance(v, dict) else "an object"
    if name == "temperature":
        return None if v is None or (_is_number(v) and v > 0) else "a positive number or null"
    if name == "abstain_threshold":
        return None if v is None or (_is_number(v) and 0 <= v <= 1) else "a number in [0, 1] or null"
    if name == "scale_guard":
        if v is None:
            return None
        from .scale_guard import ScaleGuard

        try:
            ScaleGuard.from_dict(v)
        except (ValueError, TypeError) as exc:
            return f"null or a valid scale guard ({exc})"
        return None
    if name == "contract_version":
        return None if _is_int(v) else "an integer"
    return None


def _short(v) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:37] + "..."


def is_tflite(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == TFLITE_IDENTIFIER


def strip_contract(data: bytes) -> bytes:
    """The flatbuffer alone (whatever follows it in an appended zip is removed)."""
    offset = _zip_offset(data)
    return data if offset is None else data[:offset]


def embed_contract(tflite_bytes: bytes, contract: ModelContract) -> bytes:
    """Return `tflite_bytes` (any previous contract removed) + a zip with the contract and labels."""
    if not is_tflite(tflite_bytes):
        raise ModelFileError("refusing to embed a contract: bytes are not a TFLite flatbuffer (no 'TFL3')")
    base = strip_contract(tflite_bytes)
    buf = io.BytesIO()
    # Fixed timestamps so that the same model + contract always gives the same bytes (reproducible sha256).
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, text in ((CONTRACT_NAME, contract.to_json()), (LABELS_NAME, "\n".join(contract.labels) + "\n")):
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            zf.writestr(info, text)
    return base + buf.getvalue()


def read_contract(source: str | os.PathLike | bytes) -> ModelContract | None:
    """Read the embedded contract of a .tflite file (path or bytes); None when it has none.

    Raises ModelFileError when the file is not a TFLite model at all.
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else _read(source)
    if not is_tflite(data):
        raise ModelFileError(f"{name}: not a TFLite model (missing 'TFL3' identifier)")
    offset = _zip_offset(data)
    if offset is None:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data[offset:])) as zf:
            if CONTRACT_NAME not in zf.namelist():
                return None
            text = zf.read(CONTRACT_NAME).decode("utf-8")
    except (zipfile.BadZipFile, UnicodeDecodeError, KeyError) as exc:
        raise ModelFileError(f"{name}: embedded metadata is corrupt ({exc})") from None
    return ModelContract.from_json(text, source=name)


def _read(path: str | os.PathLike) -> bytes:
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"{p}: model file not found")
    if p.is_dir():
        raise ModelFileError(f"{p}: is a directory, expected a .tflite file")
    return p.read_bytes()


def _zip_offset(data: bytes) -> int | None:
    """Byte offset where an appended zip starts, or None.

    Uses the end-of-central-directory record (last 64 KiB), so a zip signature that happens to occur in
    the weights is never mistaken for metadata.
    """
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 65_557))
    if eocd < 0 or eocd + 22 > len(data):
        return None
    cd_size = int.from_bytes(data[eocd + 12:eocd + 16], "little")
    cd_offset = int.from_bytes(data[eocd + 16:eocd + 20], "little")
    start = eocd - cd_size - cd_offset
    if start <= 8 or data[start:start + 4] != b"PK\x03\x04":
        return None
    return start
