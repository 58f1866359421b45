"""The unfamiliar-lab gate as a file the device can run: `wbc_gate.tflite` + `wbc_gate.json`.

Why a file of its own: the feature distance (`wbc_edge.calibrate.feature_distance`) tells a lab the model has never seen
(crossdomain: 96 % of Tecom, 90 % of LISC beyond the cut, 4 % of PBC test), but it lived beside the Keras model
only.  The classifier files keep their one output (MediaPipe, the Android bundle and every client read it), so
the gate is a second model: the same backbone up to the pooled features, then the distance to each class
mean computed in the graph with plain Dense/Multiply/Add layers (no Lambda: the safe-mode rule), float16
weights.  Its thresholds travel in the JSON beside it; `wbc_edge.runtime.gate.LabGate` applies them.

In the graph, with P = L L^T (Cholesky of the shared precision), z = (f - mean) @ basis and y = z @ L:
distance_c = |y - m_c L|^2 = |y|^2 - 2 y.(m_c L) + |m_c L|^2 - one Dense for y, one for the cross term (its bias
the constant), and |y|^2 as Multiply(y, y) summed by a Dense of ones.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..core import atomic

GATE_FILE = "wbc_gate.tflite"
GATE_JSON = "wbc_gate.json"
GATE_FORMAT = 1


def gate_model(model, fd):
    """Keras model: the classifier's input -> (N, classes) squared distances to each class mean."""
    from ..calibrate.confidence import feature_model
    from ..core.tfcompat import import_tf

    _, keras = import_tf()
    feats = feature_model(model)
    chol = np.linalg.cholesky(np.asarray(fd.precision, dtype=np.float64))          # P = L L^T
    kernel = np.asarray(fd.basis, dtype=np.float64) @ chol                         # (F, D)
    bias = -np.asarray(fd.mean, dtype=np.float64) @ kernel                          # (D,)
    centres = np.asarray(fd.class_means, dtype=np.float64) @ chol                   # (C, D)
    d, c = kernel.shape[1], centres.shape[0]
    y = keras.layers.Dense(d, name="gate_whiten")(feats.output)
    sq = keras.layers.Dense(c, use_bias=False, name="gate_norm")(keras.layers.Multiply(name="gate_square")([y, y]))
    cross = keras.layers.Dense(c, name="gate_cross")(y)
    out = keras.layers.Add(name="gate_distance")([sq, cross])
    gate = keras.Model(model.input, out, name="wbc_gate")
    gate.get_layer("gate_whiten").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    gate.get_layer("gate_norm").set_weights([np.ones((d, c), np.float32)])
    gate.get_layer("gate_cross").set_weights([(-2.0 * centres.T).astype(np.float32),
                                              (centres ** 2).sum(1).astype(np.float32)])
    return gate


def batch_ratio_rule(val_distances: np.ndarray, val_median: float, batch: int = 40, draws: int = 2000,
                     seed: int = 0) -> float:
    """benchmarks/gate/RULE.md: 1.25 x the 99th percentile of the median-distance ratio of random `batch`-cell
    batches of the val split."""
    rng = np.random.default_rng(seed)
    d = np.asarray(val_distances, dtype=np.float64)
    ratios = [np.median(d[rng.choice(len(d), size=min(batch, len(d)), replace=False)]) / val_median
              for _ in range(draws)]
    return float(1.25 * np.quantile(ratios, 0.99))


def export_gate(run_dir: str | Path, out_dir: str | Path, *, progress=None) -> dict:
    """Write out_dir/wbc_gate.tflite (float16) + wbc_gate.json from RUN_DIR's model.keras and feature-distance fit;
    the batch threshold is fitted on the run's val split by `batch_ratio_rule`.  Returns the JSON record."""
    import tempfile

    from ..calibrate.confidence import load_feature_distance
    from ..data.run_files import load_scale_guard
    from ..data import SplitManifest
    from ..core.errors import WbcEdgeError
    from ..model.network import load_model, model_input_size
    from ..core.preprocess import PREPROCESS_VERSION, preprocess
    from ..core.progress import resolve
    from ..core.scale_guard import guard_pixels
    from ..data.run_files import model_labels
    from ..core.tfcompat import import_tf
    from .convert import saved_model

    say = resolve(progress).say
    run = Path(run_dir)
    fd = load_feature_distance(run)
    if fd is None:
        raise WbcEdgeError(f"{run}: no feature_distance.npz (fit it with `wbc-edge calibrate {run} "
                           "--feature-distance-only`)")
    model = load_model(run / "model.keras")
    size = model_input_size(model)
    gate = gate_model(model, fd)
    tf, _ = import_tf()
    with tempfile.TemporaryDirectory() as tmp:
        saved_model(gate, Path(tmp) / "sm")
        conv = tf.lite.TFLiteConverter.from_saved_model(str(Path(tmp) / "sm"))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
        blob = conv.convert()
    # The batch threshold, on the val split's distances from the file itself (what the device will compute).
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    root = info.get("config", {}).get("data_root")
    val_paths, _ = SplitManifest.load(run / "split.csv").files("val", root)
    guard = load_scale_guard(run)
    from ..runtime.gate import distances_of_blob

    px = np.stack([guard_pixels(preprocess(p, size), guard)[0] for p in val_paths])
    val_d = distances_of_blob(blob, px)
    ratio = batch_ratio_rule(val_d, fd.val_median)
    out = Path(out_dir)
    atomic.write_bytes(out / GATE_FILE, blob)
    rec = {"format": GATE_FORMAT, "file": GATE_FILE, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
           "input_size": size, "input": "float32 raw RGB 0..255 (N, S, S, 3), the classifier's pixels (preprocess "
           "+ scale guard)", "output": "float32 (N, classes): squared Mahalanobis distance to each class mean; "
           "an image's distance is the minimum", "labels": list(model_labels(run / "model.keras")),
           "cut": float(fd.cut), "quantile": float(fd.quantile), "val_median": float(fd.val_median),
           "val_median_from_file": float(np.median(val_d)), "batch_ratio": ratio, "batch_min": 20,
           "rule": "image far: distance > cut; batch (>= batch_min cells) unfamiliar: median distance / val_median "
                   "> batch_ratio (benchmarks/gate/RULE.md)",
           "source_model_sha256": atomic.sha256_file(run / "model.keras"),
           "preprocess": PREPROCESS_VERSION, "scale_guard": guard.to_dict() if guard else None}
    atomic.write_json(out / GATE_JSON, rec)
    say(f"Gate: {out / GATE_FILE} ({len(blob) / 1e6:.2f} MB); far above {fd.cut:.1f}; batch unfamiliar above "
        f"{ratio:.2f} x the val median {fd.val_median:.1f}")
    return rec


__all__ = ["GATE_FILE", "GATE_JSON", "batch_ratio_rule", "export_gate", "gate_model"]
