"""Everything an export reads before it converts anything, checked up front with one-line errors.

Where the model, split manifest, data root and output folder are (`resolve_inputs`), which variants
(`select_variants`, from the registry), whether the output may be written (`guard_outputs`), which labels
the model's outputs mean (`resolve_labels`: run.json's stored list; the five WBC classes only for a
5-output model made before labels were stored).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..core.atomic import read_json
from ..core.errors import DatasetError, ModelFileError, WbcEdgeError
from ..core.labels import Labels, legacy_labels, stored_labels
from . import variants as registry
from .config import SPLITS, ExportConfig
from .variants import VariantSpec


@dataclass
class ExportInputs:
    model_path: Path
    run_dir: Path
    run_info: dict | None
    split_path: Path
    data_root: Path
    out_dir: Path
    android_dir: Path | None


def resolve_inputs(cfg: ExportConfig) -> ExportInputs:
    src = Path(cfg.source).expanduser()
    if src.is_dir():
        model_path = src / "model.keras"
        if not model_path.is_file():
            raise ModelFileError(f"{src}: not a run directory (no model.keras); pass RUN_DIR or a .keras "
                                 "file")
        run_dir = src
    elif src.is_file():
        model_path, run_dir = src, src.parent
    else:
        raise ModelFileError(f"{src}: not found (expected RUN_DIR or a .keras model file)")
    run_info = None
    run_json = run_dir / "run.json"
    if run_json.is_file():
        run_info = read_json(run_json, ModelFileError, missing="not found", unreadable="not valid JSON")
        if not isinstance(run_info, dict):
            raise ModelFileError(f"{run_json}: not a JSON object")
    split_path = Path(cfg.split_manifest).expanduser() if cfg.split_manifest else run_dir / "split.csv"
    if not split_path.is_file():
        raise DatasetError(f"{split_path}: split manifest not found; pass --split-manifest CSV "
                           f"(calibration uses its '{cfg.calibration_split}' split, parity its "
                           f"'{cfg.parity_split}' split)")
    if cfg.data_root:
        data_root, origin = Path(cfg.data_root).expanduser(), "--data"
    else:
        recorded = ((run_info or {}).get("config") or {}).get("data_root")
        if not recorded:
            raise DatasetError(f"no data root: pass --data ROOT (the ImageFolder the paths in "
                               f"{split_path.name} refer to); {run_json} has no config.data_root")
        data_root, origin = Path(recorded).expanduser(), f"config.data_root of {run_json}"
    if not data_root.is_dir():
        raise DatasetError(f"{data_root}: data root not found (from {origin}); pass --data ROOT")
    out_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else run_dir / "export"
    android = Path(cfg.android_dir).expanduser() if cfg.android_dir else None
    return ExportInputs(model_path, run_dir, run_info, split_path, data_root, out_dir, android)


def domain_root(spec: str) -> str:
    """The folder of a --parity-data value ("ROOT" or "NAME=ROOT")."""
    name, sep, root = str(spec).partition("=")
    return root if sep else name


def domain_name(spec: str) -> str:
    """The name of a --parity-data value: NAME, else the folder's name."""
    name, sep, root = str(spec).partition("=")
    return name if sep else Path(name).resolve().name


def select_variants(cfg: ExportConfig) -> list[VariantSpec]:
    """Validate the configuration; the chosen variants' specs in registry order."""
    chosen = cfg.variant_names()
    if not chosen:
        raise WbcEdgeError("no variants selected")
    unknown = [v for v in chosen if v not in registry.VARIANTS]
    if unknown:
        raise WbcEdgeError(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(registry.VARIANTS)})")
    stray = [v for v in cfg.variant_options if v not in registry.VARIANTS]
    if stray:
        raise WbcEdgeError(f"options for unknown variant(s) {', '.join(stray)}")
    if cfg.parity_split not in SPLITS or cfg.calibration_split not in SPLITS:
        raise WbcEdgeError(f"splits must be one of {', '.join(SPLITS)}")
    if not 0.0 <= cfg.calibration_augmented_fraction <= 1.0:
        raise WbcEdgeError(f"--calibration-augmented-fraction must be in [0, 1], got "
                           f"{cfg.calibration_augmented_fraction}")
    if cfg.calibration_augment is not None:
        from ..data.augment import preset

        preset(cfg.calibration_augment)  # an unknown name fails before anything is converted
    for spec in cfg.parity_domains:
        if not Path(domain_root(spec)).is_dir():
            raise WbcEdgeError(f"--parity-data {spec}: not a directory (expected an ImageFolder root or NAME=ROOT)")
    if cfg.calibration_size < 1:
        raise WbcEdgeError(f"--calibration-size must be >= 1, got {cfg.calibration_size}")
    if cfg.parity_limit is not None and cfg.parity_limit < 1:
        raise WbcEdgeError(f"--parity-limit must be >= 1, got {cfg.parity_limit}")
    specs = [with_options(s, cfg.variant_options.get(s.name)) for s in registry.specs() if s.name in chosen]
    if any(s.qat for s in specs) and (cfg.qat_epochs < 1 or cfg.qat_images < 1):
        raise WbcEdgeError("--qat-epochs and --qat-images must be >= 1")
    if cfg.android_dir is not None and not any(s.android for s in specs):
        flags = " and/or ".join(s.cli_flag or s.name for s in registry.specs() if s.android)
        raise WbcEdgeError(f"--android needs an int8 variant ({flags})")
    return specs


def with_options(spec: VariantSpec, overrides) -> VariantSpec:
    """The spec with ExportConfig.variant_options applied; an option the spec does not have is an error."""
    if not overrides:
        return spec
    unknown = [k for k in overrides if k not in spec.options]
    if unknown:
        raise WbcEdgeError(f"variant {spec.name}: unknown option(s) {', '.join(unknown)} (it has: "
                           f"{', '.join(spec.options) or 'none'})")
    return dataclasses.replace(spec, options={**spec.options, **dict(overrides)})


def guard_outputs(inp: ExportInputs, force: bool) -> None:
    out = inp.out_dir
    if out.exists() and not out.is_dir():
        raise WbcEdgeError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise WbcEdgeError(f"{out}: output directory is not empty; use --force to overwrite, or choose --out")
    if inp.android_dir is not None and not force:
        from .android import BUNDLE_FILES, GUARD_FILE

        existing = [n for n in (*BUNDLE_FILES, GUARD_FILE) if (inp.android_dir / n).exists()]
        if existing:
            raise WbcEdgeError(f"{inp.android_dir}: already holds {', '.join(existing)}; use --force to "
                               "overwrite")


def resolve_labels(cfg: ExportConfig, inp: ExportInputs, num_outputs: int) -> tuple[Labels, str]:
    """(the labels of the model's outputs, where they came from).

    Order of preference: --labels, run.json's `labels` (written by `wbc-edge train` / `adapt`), and - only
    for models made before labels were stored - the five WBC classes when the model has five outputs."""
    stored, origin = None, None
    if cfg.labels:
        stored, origin = list(cfg.labels), "--labels"
    elif inp.run_info and inp.run_info.get("labels"):
        stored, origin = inp.run_info["labels"], f"labels of {inp.run_dir / 'run.json'}"
    if stored is not None:
        labels = stored_labels(stored, origin)
        if len(labels) != num_outputs:
            raise ModelFileError(f"{inp.model_path}: the model has {num_outputs} outputs but {origin} names "
                                 f"{len(labels)} classes ({', '.join(labels)})")
        return labels, origin
    return (legacy_labels(num_outputs, str(inp.model_path), f"no 'labels' in {inp.run_dir / 'run.json'}; pass "
                          "--labels with the class names in output order"),
            "the five WBC classes (the model's run stores no labels: made before they were)")
