"""A trained run's small files, read and written without TensorFlow: its class list, its confidence
calibration and its scale guard.

Why one TF-free module: bench, crossdomain, export and the CLI all need to know what a run stored (which classes,
which temperature, which scale guard) before - or without - loading its Keras model; keeping the readers here
lets those stages read a run without importing the training side (issue 34's upward imports).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core import atomic
from ..core.calibration import Calibration
from ..core.errors import DatasetError, ModelFileError
from ..core.labels import Labels, legacy_labels, stored_labels
from ..core.scale_guard import SCALE_GUARD_FILE, ScaleGuard

__all__ = ["CALIBRATION_FILE", "SCALE_GUARD_FILE", "model_labels", "save_calibration", "load_calibration",
           "save_scale_guard", "load_scale_guard"]

CALIBRATION_FILE = "calibration.json"


def model_labels(model_path: str | Path, split_manifest: str | None = None) -> Labels:
    """The class list of a .keras model, from what its run stored.

    run.json `labels` beside the model, else the label set of its split manifest (given, or split.csv beside
    the model: a training split holds every class), else WBC5 - what every model made before labels were
    stored was trained on."""
    from .manifest import SplitManifest

    folder = Path(model_path).parent
    run_json = folder / "run.json"
    if run_json.is_file():
        try:
            stored = json.loads(run_json.read_text(encoding="utf-8")).get("labels")
        except (ValueError, UnicodeDecodeError, AttributeError) as exc:
            raise DatasetError(f"{run_json}: not a readable run.json ({exc})") from None
        if stored:
            return stored_labels(stored, str(run_json))
    candidate = Path(split_manifest) if split_manifest else folder / "split.csv"
    if candidate.is_file():
        return SplitManifest.load(candidate).label_set
    return legacy_labels(None, str(model_path))


def save_calibration(run_dir: str | Path, cal: Calibration) -> Path:
    path = Path(run_dir) / CALIBRATION_FILE
    atomic.write_json(path, cal.to_dict())
    return path


def load_calibration(run_dir: str | Path) -> Calibration | None:
    path = Path(run_dir) / CALIBRATION_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return Calibration(**{k: v for k, v in raw.items() if k in Calibration.__dataclass_fields__})


def save_scale_guard(run_dir: str | Path, guard: ScaleGuard) -> Path:
    path = Path(run_dir) / SCALE_GUARD_FILE
    atomic.write_json(path, guard.to_dict())
    return path


def load_scale_guard(run_dir: str | Path) -> ScaleGuard | None:
    """RUN_DIR/scale_guard.json, or None for a run fitted before the guard existed."""
    path = Path(run_dir) / SCALE_GUARD_FILE
    if not path.exists():
        return None
    try:
        return ScaleGuard.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"{path}: not a valid scale guard ({exc})") from None
