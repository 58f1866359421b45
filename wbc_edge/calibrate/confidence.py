"""Fit a trained run's inference-time calibration and store it with the run: the confidence calibration
(temperature + abstain threshold), the scale guard (`wbc_edge.core.scale_guard`, fitted on the train split) and the
feature distance (`wbc_edge.calibrate.feature_distance`: how far a domain's images lie from the training data).

`wbc-edge train` calls this at the end of every run; `wbc-edge calibrate RUN_DIR` does it for runs trained
before calibration existed.  The result lives in RUN_DIR/calibration.json, and export copies it into every
variant's contract, where the runtime and `wbc-edge predict` apply it.  (The numpy maths is in
`wbc_edge.core.calibration`; `calibrate_run` needs TensorFlow to run the Keras model, the scale guard does not.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..core.calibration import Calibration, fit_calibration
from ..core.progress import Progress
from ..core.scale_guard import ScaleGuard, fit_scale_guard
from ..data.run_files import load_scale_guard, model_labels, save_calibration, save_scale_guard
from ..model.network import model_input_size

#: Train images the scale guard is fitted on (stratified, seed 0): its threshold is their 0.5 % quantile.
SCALE_GUARD_SAMPLE = 1000
#: Train images the feature distance is fitted on (stratified, seed 0); its cut comes from the whole val split.
FEATURE_DISTANCE_SAMPLE = 1000






def calibrate_run(run_dir: str | Path, data_root: str | None = None,
                  progress: Progress | bool | None = True) -> Calibration:
    """Fit and save the calibration of a finished run from its model.keras and split.csv val split (indexed
    by the run's class list: run.json `labels`, see `wbc_edge.model.scoring.model_labels`)."""
    from ..model.scoring import predict_keras
    from ..data.augment import shifted_val_pixels

    run = Path(run_dir)
    model, manifest, root, labels = _finished_run(run, data_root)
    size = model_input_size(model)
    paths, y = manifest.files("val", root, labels=labels)
    paths, y = [str(p) for p in paths], np.asarray(y)
    val = predict_keras(model, paths, progress=progress)
    shifted = shifted_val_pixels(paths, size).astype(np.float32)
    shifted_probs = np.concatenate([model(shifted[s:s + 32], training=False).numpy()
                                    for s in range(0, len(shifted), 32)])
    cal = fit_calibration(val, y, shifted_probs, y)
    save_calibration(run, cal)
    return cal


def _finished_run(run: Path, data_root: str | None):
    """(model checked against the run's classes, split manifest, image root, labels) of a finished run."""
    from ..data import SplitManifest
    from ..model.network import check_classifier, load_model

    info = json.loads((run / "run.json").read_text())
    root = data_root or info["config"]["data_root"]
    labels = model_labels(run / "model.keras", str(run / "split.csv"))
    model = load_model(run / "model.keras")
    check_classifier(model, run / "model.keras", labels)
    return model, SplitManifest.load(run / "split.csv"), root, labels


def fit_split_scale_guard(paths, y, size: int, n: int = SCALE_GUARD_SAMPLE) -> ScaleGuard:
    """The scale guard of a run from its train images (`paths`, class indices `y`): a stratified sample of
    `n`, seed 0, through the one `preprocess` at the model's input size."""
    from ..data.sampling import stratified_indices
    from ..core.preprocess import preprocess

    return fit_scale_guard(preprocess(paths[i], size) for i in stratified_indices(np.asarray(y), n, seed=0))






def scale_guard_run(run_dir: str | Path, data_root: str | None = None) -> ScaleGuard:
    """Fit and save the scale guard of a finished run from its split.csv train split (no TensorFlow when
    run.json records the input size)."""
    from ..data import SplitManifest

    run = Path(run_dir)
    info = json.loads((run / "run.json").read_text())
    root = data_root or info["config"]["data_root"]
    labels = model_labels(run / "model.keras", str(run / "split.csv"))
    paths, y = SplitManifest.load(run / "split.csv").files("train", root, labels=labels)
    size = (info["config"].get("model") or {}).get("input_size")
    if size is None:  # an older or hand-made run.json: ask the model itself
        from ..model.network import load_model, model_input_size

        size = model_input_size(load_model(run / "model.keras"))
    guard = fit_split_scale_guard([str(p) for p in paths], y, int(size))
    save_scale_guard(run, guard)
    return guard


def feature_model(model):
    """The Keras sub-model from the input to the pooled features (the layer named "pool", as `build_model`
    names it), sharing the model's weights."""
    from ..core.errors import ModelFileError
    from ..core.tfcompat import import_tf

    _, keras = import_tf()
    try:
        pool = model.get_layer("pool")
    except ValueError:
        raise ModelFileError(f"{model.name}: no 'pool' layer (not a wbc-edge MobileNetV2 classifier)") from None
    return keras.Model(model.input, pool.output, name="features")


def fit_run_feature_distance(model, train_paths, y_train, val_paths, guard: ScaleGuard | None = None,
                             n: int = FEATURE_DISTANCE_SAMPLE, progress: Progress | bool | None = False):
    """The feature distance of a trained model: pooled features of a stratified sample of `n` train images
    (seed 0) and of every val image, through the one preprocessing path and the run's scale guard - the pixels
    every stage feeds."""
    from ..data.sampling import stratified_indices
    from .feature_distance import fit_feature_distance
    from ..model.scoring import predict_keras

    feats = feature_model(model)
    idx = stratified_indices(np.asarray(y_train), n, seed=0)
    f_train = predict_keras(feats, [str(train_paths[i]) for i in idx], progress=progress, guard=guard)
    f_val = predict_keras(feats, [str(p) for p in val_paths], progress=progress, guard=guard)
    return fit_feature_distance(f_train, np.asarray(y_train)[idx], f_val)


def load_feature_distance(run_dir: str | Path):
    """RUN_DIR/feature_distance.npz, or None for a run fitted before it existed (or an adapted run)."""
    from .feature_distance import FEATURE_DISTANCE_FILE, FeatureDistance

    path = Path(run_dir) / FEATURE_DISTANCE_FILE
    return FeatureDistance.load(path) if path.exists() else None


def feature_distance_run(run_dir: str | Path, data_root: str | None = None,
                         progress: Progress | bool | None = True):
    """Fit and save the feature distance of a finished run from its model.keras and split.csv."""
    from .feature_distance import FEATURE_DISTANCE_FILE

    run = Path(run_dir)
    model, manifest, root, labels = _finished_run(run, data_root)
    train_paths, y_train = manifest.files("train", root, labels=labels)
    val_paths, _ = manifest.files("val", root, labels=labels)
    fd = fit_run_feature_distance(model, train_paths, y_train, val_paths, load_scale_guard(run), progress=progress)
    fd.save(run / FEATURE_DISTANCE_FILE)
    return fd
