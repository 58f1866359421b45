"""Which models a bench run compares: MODELS (files or export folders) and the reference, with their names,
variants, labels and the export's own parity record.

Everything about variants comes from the export registry (`wbc_edge.export.variants`) and the export
manifest reader (`wbc_edge.export.manifest`) - this module knows no variant name and no manifest key, so a
variant added to the registry is benchmarked without a change here.  TF-free: a .keras reference is only
inspected as a zip (input size) and by the run files beside it (labels: `wbc_edge.model.scoring.model_labels`);
it runs in `keras_worker`.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ModelFileError, WbcEdgeError
from ..export.manifest import MANIFEST_NAME, entry_for_file, manifest_variants, read_manifest
from ..export.variants import VARIANTS, VariantSpec, is_unquantised, spec_for_file

__all__ = ["BenchModel", "resolve_models", "reference_how", "expand_model_paths", "keras_input_size",
           "export_record", "variant_spec"]


@dataclass
class BenchModel:
    """One model of a bench run, filled in as the run goes (probabilities in the bench's label order)."""

    name: str
    path: Path
    kind: str                       # "tflite" | "keras"
    is_reference: bool = False
    contract: Any = None
    input_size: int | None = None
    variant: str | None = None
    input_dtype: str | None = None
    export_parity: dict | None = None
    probs: np.ndarray | None = None
    labels: list[str] | None = None
    latency: list[dict] = field(default_factory=list)


def variant_spec(m: BenchModel) -> VariantSpec | None:
    """The registry's spec of a model's variant (by its contract's variant, else by its file name)."""
    if m.variant and m.variant in VARIANTS:
        return VARIANTS[m.variant]
    return spec_for_file(m.path.name)



def _model_kind(path: Path) -> str:
    if path.suffix == ".keras":
        return "keras"
    if path.suffix == ".tflite":
        return "tflite"
    raise ModelFileError(f"{path}: expected a .tflite (or, as --reference, a .keras) model file")


def expand_model_paths(models) -> list[Path]:
    """MODELS as files: a .tflite as given; an export folder -> every variant its manifest.json lists as
    written (status ok), in the manifest's order."""
    out: list[Path] = []
    for m in models:
        p = Path(m)
        if p.is_dir():
            entries = [e for e in manifest_variants(read_manifest(p)) if e.ok and (p / e.file).is_file()]
            if not entries:
                raise ModelFileError(f"{p / MANIFEST_NAME}: lists no written .tflite variant")
            out.extend(p / e.file for e in entries)
            continue
        if not p.is_file():
            raise ModelFileError(f"{p}: model file not found")
        if _model_kind(p) != "tflite":
            raise ModelFileError(f"{p}: MODELS must be .tflite files (or export folders); pass a .keras model "
                                 "as --reference")
        out.append(p)
    return out


def keras_input_size(path: str | os.PathLike) -> int | None:
    """Input size from a .keras archive's config.json without TensorFlow (None when not found)."""

    def find(obj):
        if isinstance(obj, dict):
            for key in ("batch_input_shape", "batch_shape"):
                shape = obj.get(key)
                if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[1], int):
                    return int(shape[1])
            children = obj.values()
        elif isinstance(obj, list):
            children = obj
        else:
            return None
        for v in children:
            r = find(v)
            if r:
                return r
        return None

    try:
        with zipfile.ZipFile(path) as zf:
            return find(json.loads(zf.read("config.json")))
    except (OSError, zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        return None


def export_record(path: Path) -> tuple[dict | None, dict | None]:
    """(this file's entry in the export manifest.json beside it, the manifest's parity_reference);
    (None, None) without one."""
    entry, parity_reference = entry_for_file(path)
    if entry is None:
        return None, None
    rec = {"manifest": str(path.parent / MANIFEST_NAME), "variant": entry.variant, "status": entry.status,
           "reason": entry.reason, "parity": entry.parity, "sha256": entry.sha256}
    return rec, parity_reference


def resolve_models(cfg, notes: list[str]) -> tuple[list[BenchModel], BenchModel]:
    """(every model, the reference among them) for a BenchConfig; notes say how the reference was chosen."""
    if not cfg.models:
        raise WbcEdgeError("no models given")
    models = [_tflite_model(p) for p in expand_model_paths(cfg.models)]
    ref = _reference(cfg, models, notes)
    ref.is_reference = True
    _name(models)
    for m in models:
        if m.kind == "tflite":
            m.export_parity, _ = export_record(m.path)
    return models, ref


def _tflite_model(path: Path) -> BenchModel:
    """A .tflite of the run with its contract and variant (the contract's, else the registry's for its file
    name)."""
    from ..core.contract import read_contract

    contract = read_contract(path)
    spec = spec_for_file(path.name)
    variant = contract.variant if contract is not None else (spec.name if spec is not None else None)
    return BenchModel(name="", path=path, kind="tflite", contract=contract, variant=variant)


def _reference(cfg, models: list[BenchModel], notes: list[str]) -> BenchModel:
    if cfg.reference is not None:
        rp = Path(cfg.reference)
        if not rp.is_file():
            raise ModelFileError(f"{rp}: reference model file not found")
        notes.append(f"reference: {rp} (given with --reference)")
        if _model_kind(rp) == "keras":
            ref = BenchModel(name="keras", path=rp, kind="keras", input_size=keras_input_size(rp))
            models.insert(0, ref)
            return ref
        for m in models:
            if os.path.samefile(m.path, rp):
                return m
        ref = _tflite_model(rp)
        models.insert(0, ref)
        return ref
    for m in models:
        if is_unquantised(variant_spec(m)):
            notes.append(f"no --reference given: the reference is the {m.variant} .tflite among MODELS "
                         f"({m.path}); its parity with the Keras model is the export's, recorded in the "
                         f"{MANIFEST_NAME} beside it (reference.export_parity)")
            return m
    notes.append(f"no --reference and no unquantised (float32) .tflite among MODELS: the reference is the "
                 f"first model, {models[0].path}")
    return models[0]


def reference_how(cfg, ref: BenchModel) -> str:
    """How the reference was chosen, for result["reference"]["how"]."""
    if cfg.reference is not None:
        return "given with --reference"
    if is_unquantised(variant_spec(ref)):
        return f"the {ref.variant} .tflite among MODELS"
    return "the first of MODELS"


def _name(models: list[BenchModel]) -> None:
    """Names: the contract's variant when unique, else the file stem, else parent/stem."""
    tfl = [m for m in models if m.kind == "tflite"]
    variants = [m.variant for m in tfl]
    for m in tfl:
        m.name = m.variant if m.variant and variants.count(m.variant) == 1 else m.path.stem
    names = [m.name for m in models]
    for m in models:
        if names.count(m.name) > 1:
            m.name = f"{m.path.parent.name}/{m.path.stem}"
    if len({m.name for m in models}) != len(models):
        raise WbcEdgeError("the same model file is listed twice: " + ", ".join(str(m.path) for m in models))
