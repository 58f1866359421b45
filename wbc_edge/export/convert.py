"""Keras model -> TFLite flatbuffer for one `VariantSpec` (TensorFlow imported inside the functions).

Conversion goes through `model.export(dir)` + `TFLiteConverter.from_saved_model` (5-10x faster than
`from_keras_model`, see TOOLCHAIN.md).  The spec's settings are names (variants.py stays TF-free); they are
turned into tf.lite objects here.  A spec's `converter_hook(converter, ctx)` runs last and may return the
flatbuffer itself (e.g. from a QuantizationDebugger with a denylist).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import selective  # noqa: F401  (registers the built-in "float_fallback" converter hook)
from .variants import VariantSpec


@dataclass
class ConvertContext:
    """What a converter hook may use.  `model` is the Keras model converted (the QAT copy for QAT
    variants); `calibration` the float32 calibration batch (None when the spec needs none); `options` the
    spec's options (with ExportConfig.variant_options applied); `record` what the hook wants in the variant's
    manifest entry (e.g. int8_mixed's float_layers); `representative_dataset` the generator function fed
    to the converter."""

    tf: Any
    spec: VariantSpec
    model: Any
    saved_model_dir: Path
    calibration: np.ndarray | None
    options: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    def representative_dataset(self):
        return representative_dataset(self.calibration)


def saved_model(model, directory: Path) -> None:
    """model.export (the fast path); its chatty signature listing goes to a buffer, not the console."""
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(directory))


def representative_dataset(calibration: np.ndarray | None):
    """The converter's representative dataset: one image per step, in the calibration order."""
    if calibration is None:
        raise ValueError("this variant needs calibration images")

    def gen():
        for i in range(len(calibration)):
            yield [calibration[i:i + 1]]

    return gen


def configure(converter, spec: VariantSpec, calibration: np.ndarray | None, tf) -> None:
    """Apply a spec's converter settings (by name) to a TFLiteConverter."""
    if spec.optimizations:
        converter.optimizations = [getattr(tf.lite.Optimize, o) for o in spec.optimizations]
    if spec.supported_types:
        converter.target_spec.supported_types = [getattr(tf, t) for t in spec.supported_types]
    if spec.supported_ops:
        converter.target_spec.supported_ops = [getattr(tf.lite.OpsSet, o) for o in spec.supported_ops]
    if spec.representative_data:
        converter.representative_dataset = representative_dataset(calibration)
    if spec.io_dtype is not None:
        converter.inference_input_type = getattr(tf, spec.io_dtype)
        converter.inference_output_type = getattr(tf, spec.io_dtype)


def to_tflite(saved_model_dir: Path, spec: VariantSpec, calibration: np.ndarray | None, model=None,
              record: dict | None = None) -> bytes:
    """Convert a SavedModel as `spec` says; returns the flatbuffer (no metadata, no contract yet).  A hook's
    `ctx.record` is merged into `record` (the manifest entry)."""
    from ..core.tfcompat import import_tf

    tf, _ = import_tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    configure(conv, spec, calibration, tf)
    with contextlib.redirect_stdout(io.StringIO()):
        hook = spec.hook()
        if hook is not None:
            ctx = ConvertContext(tf, spec, model, Path(saved_model_dir), calibration, dict(spec.options))
            out = hook(conv, ctx)
            if record is not None:
                record.update(ctx.record)
            if out is not None:
                return bytes(out)
        return bytes(conv.convert())
