"""The unfamiliar-lab gate in the Android bundle: wbc_gate.tflite + wbc_gate.json + LabGate.kt, and
wbc_model.json's "gate" record (the numbers the README's Kotlin uses).

Why a separate step: the gate is written by `wbc-edge export-gate` (from the run's feature-distance fit), the
bundle by `wbc-edge export --android`; `export-gate RUN --out DIR --android BUNDLE` joins them.  A gate
belongs to one model: it is refused for a bundle whose int8 file came from another model (the source
model's sha256 in both must agree).  TF-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..core import atomic
from ..core.errors import ModelFileError, WbcEdgeError, first_line
from .android_readme import GATE_JSON_FILE, GATE_KT_FILE, GATE_MODEL_FILE, METADATA_FILE, readme_text

_NUMBERS = ("cut", "val_median", "batch_ratio", "batch_min")


def gate_kotlin_source() -> bytes:
    """LabGate.kt as shipped in the package (a port of wbc_edge.runtime.gate; tests/test_android_kotlin.py)."""
    return (Path(__file__).parent / GATE_KT_FILE).read_bytes()


def _read_gate(gate_path: Path) -> tuple[bytes, dict]:
    meta_path = gate_path.with_suffix(".json")
    try:
        rec = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(rec, dict) or any(k not in rec for k in (*_NUMBERS, "sha256", "source_model_sha256")):
            raise ValueError("missing fields")
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{meta_path}: not a readable gate description ({first_line(exc)}); "
                             "`wbc-edge export-gate` writes it beside the gate") from None
    try:
        blob = gate_path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{gate_path}: cannot be read ({first_line(exc)})") from None
    if hashlib.sha256(blob).hexdigest() != rec["sha256"]:
        raise ModelFileError(f"{gate_path}: sha256 differs from {meta_path.name} (another gate's description?)")
    return blob, rec


def gate_metadata(blob: bytes, rec: dict) -> dict:
    """wbc_model.json's "gate": the file, its hash, and the decision's numbers."""
    return {"file": GATE_MODEL_FILE, "description": GATE_JSON_FILE, "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob), **{k: rec[k] for k in _NUMBERS},
            "source_model_sha256": rec["source_model_sha256"],
            "decision": "distance = min of the gate's output; a cell is far when distance > cut; a batch of >= "
                        "batch_min cells is from an unfamiliar lab when median(distance) / val_median > batch_ratio"}


def add_gate(bundle_dir: str | os.PathLike, gate_path: str | os.PathLike) -> dict:
    """Copy the gate (and LabGate.kt) into an Android bundle and record it in wbc_model.json + README.md, all
    atomically.  Refused when the bundle's model comes from another Keras model than the gate."""
    d, gate = Path(bundle_dir), Path(gate_path)
    meta_path = d / METADATA_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WbcEdgeError(f"{meta_path}: not an Android bundle's metadata ({first_line(exc)}); write the "
                           "bundle with `wbc-edge export --android DIR` first") from None
    blob, rec = _read_gate(gate)
    if meta.get("source_model_sha256") != rec["source_model_sha256"]:
        raise WbcEdgeError(f"{gate}: made from model {str(rec['source_model_sha256'])[:12]}..., but {d}'s int8 file "
                           f"from {str(meta.get('source_model_sha256'))[:12]}...: export both from one run")
    meta["gate"] = gate_metadata(blob, rec)
    from ..core.contract import read_contract

    contract = read_contract((d / meta.get("model_file", "wbc_int8.tflite")).read_bytes())
    # the confidence half of the one accept/refuse decision (LabGate.decide): calibrated top-1 >= this
    meta["gate"]["abstain_threshold"] = float(contract.abstain_threshold or 0.0) if contract else 0.0
    atomic.write_bytes(d / GATE_MODEL_FILE, blob)
    atomic.write_json(d / GATE_JSON_FILE, rec)
    atomic.write_bytes(d / GATE_KT_FILE, gate_kotlin_source())
    atomic.write_bytes(meta_path, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    atomic.write_bytes(d / "README.md", readme_text(meta).encode("utf-8"))
    return meta["gate"]


def gate_problems(d: Path, meta: dict) -> list[str]:
    """What is wrong with a bundle's gate files against its wbc_model.json "gate" (empty: fine)."""
    g, out = meta["gate"], []
    if not (d / GATE_KT_FILE).is_file():
        out.append(f"{GATE_KT_FILE}: missing ({METADATA_FILE} has a gate; the README's Kotlin uses it)")
    f = d / GATE_MODEL_FILE
    if not f.is_file():
        return out + [f"{GATE_MODEL_FILE}: missing ({METADATA_FILE} names it as the gate)"]
    if hashlib.sha256(f.read_bytes()).hexdigest() != g.get("sha256"):
        out.append(f"{GATE_MODEL_FILE}: sha256 differs from {METADATA_FILE} gate.sha256")
    if g.get("source_model_sha256") != meta.get("source_model_sha256"):
        out.append(f"{GATE_MODEL_FILE}: made from another model than {meta.get('model_file')}")
    return out


__all__ = ["add_gate", "gate_kotlin_source", "gate_metadata", "gate_problems"]
