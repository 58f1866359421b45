"""What an export does (`ExportConfig`) and what it gives back (`ExportResult`, `ExportFailed`).

TF-free.  The CLI (`wbc_edge.cli.export_cmd`) takes every option default from these fields, so a default
is stated once, here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import WbcEdgeError
from .variants import default_names

SPLITS = ("train", "val", "test")


@dataclass
class ExportConfig:
    """What `export_model` does.  Paths may be str or Path.

    source: a run directory (model.keras + split.csv + run.json) or a .keras file (split.csv / run.json are
        then looked for beside it).
    out_dir: where the .tflite files and manifest.json go (default: <run dir>/export).
    variants: registered variant names (wbc_edge.export.variants); default: the specs marked `default`.
    data_root: the ImageFolder root the split manifest's relative paths refer to (default: config.data_root
        of run.json).
    split_manifest: split CSV (default: split.csv beside the model).
    labels: the model's class names in output order, for a model whose run.json does not store them (runs
        made before labels were stored; a 5-output model then gets the five WBC classes).
    """

    source: str | os.PathLike
    out_dir: str | os.PathLike | None = None
    variants: Sequence[str] = field(default_factory=default_names)
    data_root: str | os.PathLike | None = None
    split_manifest: str | os.PathLike | None = None
    labels: Sequence[str] | None = None
    calibration_size: int = 300           # representative images for int8 PTQ (and QAT range init)
    calibration_split: str = "train"
    #: Augmentation preset (wbc_edge.data.augment) applied to a share of the calibration and QAT images, so the
    #: int8 ranges cover other labs' pixels too, not only clean PBC (None: clean images only).
    calibration_augment: str | None = "robust"
    calibration_augmented_fraction: float = 0.5
    #: Extra labelled ImageFolder roots ("ROOT" or "NAME=ROOT") on which every variant must also agree with
    #: the Keras model (same agreement thresholds; all images, clean).
    parity_domains: Sequence[str] = ()
    #: Agreement (%) every variant needs on each parity domain; None = the variant's own thresholds
    #: (min_int8_agreement / min_float_agreement); 0 = measure and record, do not gate.
    min_domain_agreement: float | None = None
    parity_split: str = "test"
    parity_limit: int | None = None       # stratified subset of the parity split; None = all of it
    max_int8_drop: float = 1.0            # percentage points of accuracy an int8 variant may lose
    min_int8_agreement: float = 98.0      # % top-1 agreement with Keras, int8 variants
    min_float_agreement: float = 99.0     # % top-1 agreement with Keras, float32/float16/dynamic
    qat_epochs: int = 2                   # 2 x 2048 beat 1 x 512 on PBC: -0.05 vs -0.15 pp (about 3 min here)
    qat_images: int = 2048                # stratified subset of the train split for the QAT fine-tune
    qat_batch_size: int = 16
    qat_learning_rate: float = 1e-5
    save_qat_model: bool = False          # also write qat_model.h5 (tfmot Keras model, load with qat_scope)
    #: Per-variant overrides of a spec's `options`, e.g. {"int8_mixed": {"float_layers": 2}} (CLI:
    #: --int8-float-layers); only options the spec has.  The effective options go into the manifest entry.
    variant_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    android_dir: str | os.PathLike | None = None  # write the Android bundle here (None = no bundle)
    force: bool = False                   # allow a non-empty out_dir / existing bundle files
    seed: int = 42
    num_threads: int | None = None        # interpreter threads for parity (None: min(4, CPUs))
    batch_size: int = 32                  # Keras reference / calibration batch
    verbose: bool = True                  # progress on stderr when export_model gets no `progress`
    #: Testing hook: applied to the final float32 calibration batch (N, S, S, 3), e.g. `lambda x: x / 255`
    #: to simulate a broken calibration (pixels in [0, 1] instead of 0..255).  Recorded in the manifest.
    calibration_transform: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False,
                                                                            compare=False)

    def variant_names(self) -> list[str]:
        """The chosen variants without repeats, in the order given (a bare string is one name)."""
        chosen = [self.variants] if isinstance(self.variants, str) else list(self.variants)
        return list(dict.fromkeys(chosen))

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "calibration_transform":
                v = None if v is None else getattr(v, "__name__", "custom")
            elif isinstance(v, os.PathLike):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            elif f.name == "variant_options":
                v = {name: dict(opts) for name, opts in v.items()}
            out[f.name] = v
        return out


def config_default(name: str):
    """The default of an ExportConfig field (the CLI's option defaults come from here)."""
    f = next(f for f in dataclasses.fields(ExportConfig) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    raise KeyError(f"ExportConfig.{name} has no default")


@dataclass
class ExportResult:
    out_dir: Path
    manifest_path: Path
    manifest: dict
    files: dict[str, Path]  # variant -> .tflite path (failed gate included, failed before writing not)
    android_dir: Path | None = None
    ok: bool = True

    @property
    def failed(self) -> list[str]:
        return [v["variant"] for v in self.manifest["variants"] if v["status"] != "ok"]


class ExportFailed(WbcEdgeError):
    """One or more variants failed (at the stage their manifest entry names); the files and manifest.json
    were written.  `result` is the ExportResult (manifest included)."""

    def __init__(self, message: str, result: ExportResult):
        super().__init__(message)
        self.result = result
