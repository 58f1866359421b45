"""Standard TFLite metadata for files that already exist (`wbc-edge metadata add`): in place, atomically,
with the records that pin the file's bytes (manifest.json beside it, an Android bundle's wbc_model.json and
README.md) updated in the same step.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

from ..core import atomic
from ..core.contract import LABELS_NAME, ModelContract, embed_contract, is_tflite, read_contract, strip_contract
from ..core.errors import ModelFileError, first_line
from .metadata_read import metadata_summary
from .metadata_schema import source_bytes, zip_files
from .metadata_write import add_standard_metadata

def with_metadata(data: bytes, contract: ModelContract | None = None, *, source: str = "<bytes>") -> bytes:
    """A whole .tflite file's bytes (flatbuffer + contract zip) -> the same with standard metadata.

    The contract zip is kept byte for byte when it already holds the contract and a matching labels.txt (so
    the contract written at export survives exactly); otherwise it is written anew from `contract`.
    """
    if not is_tflite(data):
        raise ModelFileError(f"{source}: not a TFLite model (missing 'TFL3' identifier)")
    try:
        embedded = read_contract(data)
    except ModelFileError as exc:
        msg = str(exc)
        raise ModelFileError(msg.replace("<bytes>", source, 1)) from None
    if contract is None:
        contract = embedded
    if contract is None:
        raise ModelFileError(f"{source}: has no wbc-edge contract (labels, input size) to describe; "
                             "re-export it with `wbc-edge export`")
    flat = strip_contract(data)
    new_flat = add_standard_metadata(flat, contract, source=source)
    tail = data[len(flat):]
    keep = False
    if embedded is not None and contract.to_json() == embedded.to_json():
        try:
            files = zip_files(data)
            keep = files.get(LABELS_NAME, b"").decode("utf-8") == "\n".join(contract.labels) + "\n"
        except (zipfile.BadZipFile, UnicodeDecodeError):
            keep = False
    return new_flat + tail if keep else embed_contract(new_flat, contract)


def embed_metadata(path: str | os.PathLike, *, update_records: bool = True) -> dict:
    """Add (or refresh) the standard metadata of an existing .tflite file, in place and atomically.

    The file's own contract supplies labels and input contract.  With `update_records`, the records that
    pin the file's bytes are updated too: a `manifest.json` beside it listing the file (bytes, sha256,
    flatbuffer bytes/sha256), and an Android bundle's `wbc_model.json` + `README.md` beside it
    (`wbc_edge.export.android`).  Returns {path, changed, bytes, sha256, flatbuffer_sha256, records}.
    """
    p = Path(path)
    name, data = source_bytes(p)
    new = with_metadata(data, source=name)
    flat = strip_contract(new)
    info = {"path": str(p), "changed": new != data, "bytes": len(new),
            "sha256": hashlib.sha256(new).hexdigest(), "flatbuffer_sha256": hashlib.sha256(flat).hexdigest(),
            "records": []}
    if info["changed"]:
        atomic.write_bytes(p, new)
    if update_records:
        info["records"] = refresh_records(p, new, flat)
    return info


def refresh_records(path: Path, data: bytes, flat: bytes) -> list[str]:
    updated = []
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        try:
            m = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"{manifest}: not valid JSON ({first_line(exc)})") from None
        hit = False
        for entry in m.get("variants", []) if isinstance(m, dict) else []:
            if isinstance(entry, dict) and entry.get("file") == path.name:
                new = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                       "flatbuffer_bytes": len(flat), "flatbuffer_sha256": hashlib.sha256(flat).hexdigest(),
                       "tflite_metadata": metadata_summary(data)}
                if any(entry.get(k) != v for k, v in new.items()):
                    entry.update(new)
                    hit = True
        if hit:
            atomic.write_json(manifest, m)
            updated.append(str(manifest))
    from .android import GUARD_FILE, METADATA_FILE, MODEL_FILE, README_FILE, bundle_metadata_refresh

    bundle_json = path.parent / METADATA_FILE
    if path.name == MODEL_FILE and bundle_json.is_file():
        if bundle_metadata_refresh(path.parent, data):
            updated += [str(bundle_json), str(path.parent / README_FILE)]
            if (path.parent / GUARD_FILE).is_file():
                updated.append(str(path.parent / GUARD_FILE))
    return updated
