"""Quantization-aware training (tfmot) for QAT variants of `wbc_edge.export` (spec `qat=True`).

The reference model is one flat tf_keras graph, which `tfmot.quantization.keras.quantize_apply` accepts.
Three things make the result convert to a uint8-in / uint8-out model that takes raw pixels:

1. `Rescaling` (our in-graph x/127.5 - 1, layer `normalise`) is unknown to tfmot's default 8-bit registry.
   It is annotated with `RescalingQuantizeConfig`: no weights, no activation, only its OUTPUT is
   fake-quantised (like tfmot's own `Default8BitOutputQuantizeConfig`), so the converter has a range for the
   normalised tensor instead of guessing one.
2. The input `QuantizeLayer` (an `AllValuesQuantizer`: the range only ever widens) is pinned to [0, 255]
   before training; pixels never leave that range, so it stays exactly [0, 255] -> input scale 1.0,
   zero point 0 after conversion.
3. tfmot starts every activation range at [-6, 6] and moves it by an EMA with decay 0.999 - a short
   fine-tune (tens of steps on 2 CPU cores) would barely move it.  So the ranges are first calibrated from
   the float model's own activations on the calibration images (min/max, as post-training quantisation
   does), and QAT then only refines them.  BatchNorm layers are frozen (inference mode) during the
   fine-tune, as in `wbc_edge.train`, so the fake-quantised forward pass sees the same statistics as the
   deployed model.

QAT models are saved as legacy `.h5` inside `qat_scope()` (a `.keras` round trip of tfmot models fails with
"Layer 'quantize_layer' expected 5 variables, but received 3"; see TOOLCHAIN.md).
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..core.errors import WbcEdgeError, first_line
from ..core.progress import Progress, resolve
from ..core.tfcompat import import_tf

_RANGE_VARS = {"output", "post_activation", "pre_activation"}


def _tfmot():
    import_tf()  # TF_USE_LEGACY_KERAS=1 first: tfmot only quantizes tf_keras models
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise WbcEdgeError("--qat needs tensorflow-model-optimization: pip install 'wbc-edge[train]' "
                           f"({exc})") from None
    return tfmot


_CONFIG_CLASS = None


def rescaling_quantize_config_class():
    """The `RescalingQuantizeConfig` class (built lazily: its base class lives in tfmot)."""
    global _CONFIG_CLASS
    if _CONFIG_CLASS is None:
        q = _tfmot().quantization.keras

        class RescalingQuantizeConfig(q.QuantizeConfig):
            """Quantize only the output of a `Rescaling` layer (it has no weights and no activation)."""

            def get_weights_and_quantizers(self, layer):
                return []

            def get_activations_and_quantizers(self, layer):
                return []

            def set_quantize_weights(self, layer, quantize_weights):
                pass

            def set_quantize_activations(self, layer, quantize_activations):
                pass

            def get_output_quantizers(self, layer):
                return [q.quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False,
                                                            narrow_range=False)]

            def get_config(self):
                return {}

        _CONFIG_CLASS = RescalingQuantizeConfig
    return _CONFIG_CLASS


def qat_scope():
    """Context manager under which our QAT models can be built, saved (.h5) and loaded."""
    q = _tfmot().quantization.keras
    return q.quantize_scope({"RescalingQuantizeConfig": rescaling_quantize_config_class()})


def quantize_for_training(model):
    """The flat float model -> a tfmot QAT model (fake-quant nodes, weights copied), input pinned 0..255."""
    tf, keras = import_tf()
    q = _tfmot().quantization.keras
    config_cls = rescaling_quantize_config_class()

    def annotate(layer):
        if isinstance(layer, keras.layers.Rescaling):
            return q.quantize_annotate_layer(layer, quantize_config=config_cls())
        return q.quantize_annotate_layer(layer)

    try:
        with qat_scope():
            annotated = keras.models.clone_model(model, clone_function=annotate)
            annotated.set_weights(model.get_weights())
            qmodel = q.quantize_apply(annotated)
    except (ValueError, RuntimeError) as exc:
        raise WbcEdgeError(f"tfmot cannot quantize this model: {first_line(exc)}") from None
    pinned = False
    for layer in qmodel.layers:
        if type(layer).__name__ == "QuantizeLayer":
            for w in layer.weights:
                base = w.name.split("/")[-1].split(":")[0]
                if base.endswith("_min"):
                    w.assign(0.0)
                    pinned = True
                elif base.endswith("_max"):
                    w.assign(255.0)
    if not pinned:
        raise WbcEdgeError("tfmot's QAT model has no input QuantizeLayer to pin to 0..255 (tfmot changed?)")
    return qmodel


def _range_targets(qmodel) -> dict[str, dict[str, tuple]]:
    """{float layer name: {'output'|'post_activation'|'pre_activation': (min_var, max_var)}}."""
    out: dict[str, dict[str, tuple]] = {}
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", None)
        if inner is None:
            continue
        found: dict[str, dict[str, object]] = {}
        for w in layer.weights:
            if w.shape.rank != 0:
                continue
            base = w.name.split("/")[-1].split(":")[0]
            for kind in _RANGE_VARS:
                if base in (f"{kind}_min", f"{kind}_max"):
                    found.setdefault(kind, {})[base.rsplit("_", 1)[1]] = w
        ranges = {k: (v["min"], v["max"]) for k, v in found.items() if "min" in v and "max" in v}
        if ranges:
            out[inner.name] = ranges
    return out


def calibrate_ranges(qmodel, float_model, pixels: np.ndarray, batch_size: int = 8) -> int:
    """Set every activation range of `qmodel` to the min/max of the float model's activation on `pixels`.

    Returns the number of ranges set.  `pre_activation` (softmax input of the classifier head) is computed
    from the Dense layer's input, kernel and bias; `output`/`post_activation` are the layer's output.
    Small batches: the probe returns ~65 activation maps per image (hundreds of MB per batch at 224 px).
    """
    tf, keras = import_tf()
    targets = _range_targets(qmodel)
    names = [n for n in targets if _has_layer(float_model, n)]
    probes, kinds = [], []
    for name in names:
        layer = float_model.get_layer(name)
        for kind in targets[name]:
            if kind == "pre_activation":
                if not hasattr(layer, "kernel"):
                    continue
                probes.append(layer.input)
            else:
                probes.append(layer.output)
            kinds.append((name, kind))
    if not probes:
        raise WbcEdgeError("no activation ranges found in the QAT model (tfmot changed?)")
    probe = keras.Model(float_model.input, probes)
    lo = np.full(len(probes), np.inf)
    hi = np.full(len(probes), -np.inf)
    for start in range(0, len(pixels), batch_size):
        x = pixels[start:start + batch_size].astype(np.float32)
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for i, ((name, kind), t) in enumerate(zip(kinds, outs, strict=True)):
            t = t.numpy()
            if kind == "pre_activation":
                layer = float_model.get_layer(name)
                t = t @ layer.kernel.numpy() + (layer.bias.numpy() if layer.use_bias else 0.0)
            lo[i] = min(lo[i], float(t.min()))
            hi[i] = max(hi[i], float(t.max()))
    for i, (name, kind) in enumerate(kinds):
        mn, mx = targets[name][kind]
        # A quantisation range must contain 0 (the zero point is an integer) and must not be empty.
        a, b = min(lo[i], 0.0), max(hi[i], 0.0)
        if b - a < 1e-6:
            b = a + 1e-6
        mn.assign(a)
        mx.assign(b)
    return len(kinds)


def _has_layer(model, name: str) -> bool:
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def freeze_batchnorm(qmodel) -> int:
    """Run every BatchNormalization in inference mode during the fine-tune (moving statistics kept)."""
    tf, keras = import_tf()
    n = 0
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            # A non-trainable BN runs in inference mode.  Undone after the fine-tune (`unfreeze`): the .h5
            # writer lists a frozen wrapped layer's variables twice and fails ("name already exists").
            inner.trainable = False
            n += 1
    return n


def _unfreeze_batchnorm(qmodel) -> None:
    tf, keras = import_tf()
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            inner.trainable = True


def train_qat(float_model, calib_pixels: np.ndarray, train_pixels: np.ndarray, train_labels: np.ndarray, *,
              epochs: int = 1, batch_size: int = 16, learning_rate: float = 1e-5, seed: int = 42,
              progress: Progress | bool | None = None) -> tuple[object, dict]:
    """Build the QAT model, calibrate its ranges, fine-tune it briefly; returns (qat_model, info)."""
    tf, keras = import_tf()
    log = resolve(progress).say
    if epochs < 1:
        raise WbcEdgeError(f"--qat-epochs must be >= 1 (the fake-quant weight ranges are set by training), "
                           f"got {epochs}")
    if len(train_pixels) == 0:
        raise WbcEdgeError("no training images for QAT")
    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    qmodel = quantize_for_training(float_model)
    n_ranges = calibrate_ranges(qmodel, float_model, calib_pixels)
    n_bn = freeze_batchnorm(qmodel)
    t_prep = time.perf_counter() - t0
    log(f"  QAT model ready: {n_ranges} activation ranges calibrated on {len(calib_pixels)} images, "
        f"{n_bn} BatchNorm layers frozen ({t_prep:.1f} s)")
    qmodel.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                   metrics=["accuracy"])
    ds = (tf.data.Dataset.from_tensor_slices((train_pixels, np.asarray(train_labels, dtype=np.int64)))
          .shuffle(len(train_pixels), seed=seed, reshuffle_each_iteration=True)
          .batch(batch_size)
          .map(lambda x, y: (tf.cast(x, tf.float32), y)))
    t1 = time.perf_counter()
    hist = qmodel.fit(ds, epochs=epochs, verbose=0)
    t_fit = time.perf_counter() - t1
    _unfreeze_batchnorm(qmodel)
    losses = [float(v) for v in hist.history.get("loss", [])]
    accs = [float(v) for v in hist.history.get("accuracy", [])]
    log(f"  QAT fine-tune: {epochs} epoch(s) x {len(train_pixels)} images, Adam lr {learning_rate:g}, "
        f"loss {losses[-1]:.4f}, train acc {accs[-1]:.2%} ({t_fit:.1f} s)")
    info = {"epochs": epochs, "images": int(len(train_pixels)), "batch_size": batch_size,
            "learning_rate": learning_rate, "loss": losses, "accuracy": accs,
            "ranges_calibrated": n_ranges, "batchnorm_frozen": n_bn,
            "prepare_seconds": round(t_prep, 2), "fit_seconds": round(t_fit, 2)}
    return qmodel, info


def save_qat_model(qmodel, path: str | os.PathLike) -> None:
    """Save a QAT model as .h5 (atomically); load it back with `load_qat_model`."""
    import warnings

    from ..core import atomic

    with qat_scope(), atomic.atomic_path(path, suffix=".h5") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy", category=UserWarning)
        qmodel.save(str(tmp), include_optimizer=False)


def load_qat_model(path: str | os.PathLike):
    """Load a QAT .h5 saved by `save_qat_model` (trusted files only: legacy .h5 bypasses safe mode)."""
    tf, keras = import_tf()
    with qat_scope():
        return keras.models.load_model(str(path), compile=False)
