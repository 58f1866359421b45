"""Export a reference Keras model to self-describing TFLite files, checked against Keras at export time.

    from wbc_edge.export import ExportConfig, export_model
    result = export_model(ExportConfig("runs/r1", variants=("float32", "int8"), android_dir="android_assets"))

The package reads like the pipeline (importing it loads nothing heavy: the names below are loaded on first
use, and TensorFlow only inside the functions that convert):

- `variants`        the registry: one `VariantSpec` per variant (converter settings, I/O types, gate, file,
                    CLI flag); `register` / `get` / `specs`.  TF-free.
- `config`          `ExportConfig` (every CLI default), `ExportResult`, `ExportFailed`.
- `inputs`          model / split / data root / output folder / labels, checked before any work.
- `calibration_data` the int8 calibration and QAT images (stratified, seeded, part augmented).
- `convert`         SavedModel + TFLiteConverter set up from a spec (and its converter hook).
- `qat`             the tfmot quantization-aware fine-tune of QAT variants.
- `variant_export`  one variant through its stages (stages.py): conversion, metadata, writing, parity gate.
- `parity`          the Keras reference and the parity gate.
- `metadata_*`      standard TFLite metadata (MediaPipe Tasks etc.): schema, write, read, existing files.
- `android`         the android_assets/ bundle and its checker (`android_readme`: its Kotlin README).
- `manifest`        export/manifest.json: write, read, list its variants.  TF-free.
- `pipeline`        `export_model`, the orchestration.

Variants (file `wbc_<variant>.tflite`): float32 (the graph as trained), float16 (float16 weights), dynamic
(int8 weights, float activations), int8 (PTQ with the 4 ops most sensitive on shifted views kept float,
**uint8** raw-pixel input with scale 1.0 / zero point 0, uint8 probabilities out; benchmarks/int8_faithful/),
int8_plain (every op int8), int8_mixed (the K worst ops on clean calibration images float), qat_int8 (tfmot
QAT fine-tune, then full-integer conversion).  Every file
carries the `wbc_edge.core.contract.ModelContract` and the standard TFLite metadata; see pipeline.py for the
parity gate, failure records and determinism.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "config": ("ExportConfig", "ExportResult", "ExportFailed", "config_default"),
    "pipeline": ("export_model",),
    "variants": ("VariantSpec", "VARIANTS", "register", "unregister", "get", "specs", "names",
                 "default_names", "integer_names", "variant_file", "spec_for_file"),
    "stages": ("StageFailed", "STAGES"),
    "convert": ("ConvertContext",),
    "manifest": ("MANIFEST_NAME", "ManifestEntry", "read_manifest", "manifest_variants", "entry_for_file"),
    "calibration_data": ("augment_share",),
    "tensors": ("check_input_quantisation", "tensor_details"),
    "android": ("check_android_bundle", "write_bundle", "bundle_metadata"),
    "qat": ("load_qat_model", "save_qat_model", "qat_scope"),
    "metadata_schema": ("METADATA_FIELD_NAME", "NORM_MEAN", "NORM_STD"),
    "metadata_write": ("add_standard_metadata", "build_metadata"),
    "metadata_read": ("read_standard_metadata", "check_standard_metadata", "has_standard_metadata",
                      "metadata_summary"),
    "metadata_files": ("with_metadata", "embed_metadata"),
    "wbc_edge.data.sampling": ("stratified_indices",),  # where export's subsets come from
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
#: Names computed from the registry on each access (a variant registered later is included).
_LIVE = {"DEFAULT_VARIANTS": "default_names", "INT8_VARIANTS": "integer_names"}

__all__ = sorted([*_WHERE, *_LIVE])


def __getattr__(name: str):
    if name in _LIVE:
        from . import variants

        return getattr(variants, _LIVE[name])()
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    path = module if "." in module else f"{__name__}.{module}"
    value = getattr(importlib.import_module(path), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
