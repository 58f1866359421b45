"""Reading and checking the standard TFLite metadata of a model (what MediaPipe Tasks / Task Library see).

`read_standard_metadata` gives the ModelMetadata as plain JSON-able dicts, `check_standard_metadata` the
problems a client would hit, `metadata_summary` the short record manifest.json and wbc_model.json keep.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np

from ..core.contract import LABELS_NAME, is_tflite, read_contract, strip_contract
from ..core.errors import ModelFileError, first_line
from .metadata_schema import (METADATA_FIELD_NAME, METADATA_IDENTIFIER, NORM_MEAN, NORM_STD, metadata_schema,
                              model_schema, source_bytes, zip_files)

def _metadata_buffer(data: bytes, source: str) -> bytes | None:
    schema = model_schema()
    flat = strip_contract(data)
    try:
        model = schema.Model.GetRootAs(flat, 0)
        for i in range(model.MetadataLength()):
            m = model.Metadata(i)
            name = m.Name()
            name = name.decode("utf-8") if isinstance(name, bytes) else name
            if name == METADATA_FIELD_NAME:
                buf = model.Buffers(m.Buffer())
                return bytes(buf.DataAsNumpy().tobytes()) if buf is not None and not buf.DataIsNone() else b""
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{source}: not a readable TFLite flatbuffer ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
    return None


def _to_plain(obj, md):
    """A generated object-API tree -> JSON-able dicts/lists (bytes decoded, union types named)."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (list, tuple)):
        return [_to_plain(x, md) for x in obj]
    if hasattr(obj, "__dict__"):
        out = {}
        for k, v in vars(obj).items():
            if v is None:
                continue
            if k.endswith("Type") and isinstance(v, int):
                union = {"contentPropertiesType": md.ContentProperties, "optionsType": md.ProcessUnitOptions}
                enum = union.get(k)
                if enum is not None:
                    names = {val: n for n, val in vars(enum).items() if not n.startswith("_")}
                    v = names.get(v, v)
            if k == "type" and type(obj).__name__ == "AssociatedFileT":
                names = {val: n for n, val in vars(md.AssociatedFileType).items() if not n.startswith("_")}
                v = names.get(v, v)
            if k == "colorSpace":
                names = {val: n for n, val in vars(md.ColorSpaceType).items() if not n.startswith("_")}
                v = names.get(v, v)
            out[k] = _to_plain(v, md)
        return out
    return obj


def read_standard_metadata(source: str | os.PathLike | bytes) -> dict | None:
    """The standard TFLite metadata of a model (path or bytes) as a dict; None when it has none.

    Keys follow the schema's object API (name, description, version, subgraphMetadata, associatedFiles,
    minParserVersion, ...), enums by name.  Raises ModelFileError for a file that is not TFLite, or whose
    metadata buffer does not parse.
    """
    name, data = source_bytes(source)
    if not is_tflite(data):
        raise ModelFileError(f"{name}: not a TFLite model (missing 'TFL3' identifier)")
    buf = _metadata_buffer(data, name)
    if buf is None:
        return None
    md = metadata_schema()
    if len(buf) < 8 or buf[4:8] != METADATA_IDENTIFIER:
        raise ModelFileError(f"{name}: its {METADATA_FIELD_NAME} buffer is not a metadata flatbuffer (no "
                             f"'{METADATA_IDENTIFIER.decode()}' identifier)")
    try:
        tree = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(buf, 0))
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{name}: its {METADATA_FIELD_NAME} buffer is corrupt ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
    return _to_plain(tree, md)


def has_standard_metadata(source: str | os.PathLike | bytes) -> bool:
    name, data = source_bytes(source)
    return is_tflite(data) and _metadata_buffer(data, name) is not None


def check_standard_metadata(source: str | os.PathLike | bytes) -> list[str]:
    """Problems with a model's standard metadata as MediaPipe / Task Library read it (empty list = good).

    Checks: metadata present; input ImageProperties RGB with NormalizationOptions (0, 1); output labels file
    (TENSOR_AXIS_LABELS) present in the appended zip, stored uncompressed, equal to the embedded contract's
    labels; every associated file named in the metadata present in the zip.
    """
    name, data = source_bytes(source)
    meta = read_standard_metadata(data)
    if meta is None:
        return [f"{name}: no standard TFLite metadata ({METADATA_FIELD_NAME})"]
    problems = []
    subs = meta.get("subgraphMetadata") or []
    if len(subs) != 1:
        return [f"{name}: expected metadata for 1 subgraph, got {len(subs)}"]
    sub = subs[0]
    ins, outs = sub.get("inputTensorMetadata") or [], sub.get("outputTensorMetadata") or []
    if len(ins) != 1 or len(outs) != 1:
        return [f"{name}: expected metadata for 1 input and 1 output tensor, got {len(ins)} and {len(outs)}"]
    content = ins[0].get("content") or {}
    if content.get("contentPropertiesType") != "ImageProperties" or \
            (content.get("contentProperties") or {}).get("colorSpace") != "RGB":
        problems.append(f"{name}: input metadata is not an RGB image")
    norms = [u.get("options") for u in ins[0].get("processUnits") or []
             if u.get("optionsType") == "NormalizationOptions"]
    if len(norms) != 1 or norms[0].get("mean") != list(NORM_MEAN) or norms[0].get("std") != list(NORM_STD):
        problems.append(f"{name}: input NormalizationOptions must be mean {list(NORM_MEAN)} / std "
                        f"{list(NORM_STD)} (raw pixels), got {norms}")
    label_files = [f["name"] for f in outs[0].get("associatedFiles") or [] if f.get("type") == "TENSOR_AXIS_LABELS"]
    if label_files != [LABELS_NAME]:
        problems.append(f"{name}: output must have {LABELS_NAME} as its TENSOR_AXIS_LABELS file, got {label_files}")
    try:
        files = zip_files(data)
        infos = {}
        flat = strip_contract(data)
        if len(flat) != len(data):
            with zipfile.ZipFile(io.BytesIO(data[len(flat):])) as zf:
                infos = {i.filename: i for i in zf.infolist()}
    except zipfile.BadZipFile as exc:
        return problems + [f"{name}: the appended zip is corrupt ({exc})"]
    named = [f["name"] for f in meta.get("associatedFiles") or []]
    for t in ins + outs:
        named += [f["name"] for f in t.get("associatedFiles") or []]
    for f in named:
        if f not in files:
            problems.append(f"{name}: associated file {f} is named in the metadata but missing from the zip")
        elif infos[f].compress_type != zipfile.ZIP_STORED:
            problems.append(f"{name}: associated file {f} is compressed (readers need it stored)")
    contract = read_contract(data)
    if LABELS_NAME in files and contract is not None:
        lines = [x for x in files[LABELS_NAME].decode("utf-8").splitlines() if x.strip()]
        if lines != list(contract.labels):
            problems.append(f"{name}: {LABELS_NAME} ({lines}) differs from the contract's labels "
                            f"({list(contract.labels)})")
    return problems


def metadata_summary(source: str | os.PathLike | bytes) -> dict | None:
    """A short record for manifests: {name, min_parser_version, labels_file, normalization} or None."""
    meta = read_standard_metadata(source)
    if meta is None:
        return None
    sub = (meta.get("subgraphMetadata") or [{}])[0]
    inp = (sub.get("inputTensorMetadata") or [{}])[0]
    norm = next((u.get("options") for u in inp.get("processUnits") or []
                 if u.get("optionsType") == "NormalizationOptions"), None)
    return {"format": "TFLite metadata (TFLITE_METADATA, schema M001)", "name": meta.get("name"),
            "min_parser_version": meta.get("minParserVersion"), "labels_file": LABELS_NAME,
            "normalization": norm}
