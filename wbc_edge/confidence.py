"""Fit a trained run's confidence calibration (temperature + abstain threshold) and store it with the run.

`wbc-edge train` calls this at the end of every run; `wbc-edge calibrate RUN_DIR` does it for runs trained
before calibration existed.  The result lives in RUN_DIR/calibration.json, and export copies it into every
variant's contract, where the runtime and `wbc-edge predict` apply it.  (The numpy maths is in
`wbc_edge.calibration`; this module needs TensorFlow to run the Keras model.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import atomic
from .calibration import Calibration, fit_calibration
from .progress import Progress

CALIBRATION_FILE = "calibration.json"


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


def calibrate_run(run_dir: str | Path, data_root: str | None = None,
                  progress: Progress | bool | None = True) -> Calibration:
    """Fit and save the calibration of a finished run from its model.keras and split.csv val split (indexed
    by the run's class list: run.json `labels`, see `wbc_edge.scoring.model_labels`)."""
    from .data import SplitManifest
    from .model import check_classifier, load_model
    from .scoring import model_labels, predict_keras
    from .train.selection import shifted_val_pixels

    run = Path(run_dir)
    info = json.loads((run / "run.json").read_text())
    root = data_root or info["config"]["data_root"]
    labels = model_labels(run / "model.keras", str(run / "split.csv"))
    model = load_model(run / "model.keras")
    check_classifier(model, run / "model.keras", labels)
    size = int(model.input_shape[1])
    paths, y = SplitManifest.load(run / "split.csv").files("val", root, labels=labels)
    paths, y = [str(p) for p in paths], np.asarray(y)
    val = predict_keras(model, paths, progress=progress)
    shifted = shifted_val_pixels(paths, size).astype(np.float32)
    shifted_probs = np.concatenate([model(shifted[s:s + 32], training=False).numpy()
                                    for s in range(0, len(shifted), 32)])
    cal = fit_calibration(val, y, shifted_probs, y)
    save_calibration(run, cal)
    return cal
