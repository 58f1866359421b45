"""Per-layer int8 error as numbers a person can read, and the ranking the selective fallback follows.

TF-free.  The raw numbers come from `tf.lite.experimental.QuantizationDebugger` (wbc_edge.export.selective):
for every quantised op, the difference between its int8 output and the same op run in float on the same
(dequantised) input - the layer's *own* error, not the error accumulated from the layers before it.  Here
they become, per layer:

- rmse_over_scale: RMSE in quantisation steps.  Pure rounding of an in-range value is 1/sqrt(12) = 0.29
  steps; more means weight rounding or values clipped outside the calibrated range.  The debugger's own
  measure, the one LiteRT's notebook denylists by.
- mean_abs_error_pct_of_range: mean |error| as % of the layer's int8 range (255 steps), comparable across
  layers of different scale.
- max_abs_error_over_scale: the worst element, in steps (averaged over images): clipping shows up here.
- mean_error_over_scale: the bias, in steps.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

#: One image's rounding error of an in-range value, in steps (uniform error): the floor of rmse_over_scale.
ROUNDING_FLOOR = 12 ** -0.5
_SUFFIX = re.compile(r"/(Relu6|Relu|FusedBatchNormV3|add|Mean|MatMul|BiasAdd|Conv2D|depthwise|mul|Softmax)$")


@dataclass
class LayerError:
    """One quantised op's own error on one set of images (see the module doc for the metrics)."""

    index: int                 # execution order of the NumericVerify'd ops = depth
    tensor: str                # the op's output tensor name: what the converter's denylist takes
    op: str                    # TFLite op (CONV_2D, DEPTHWISE_CONV_2D, ADD, MEAN, ...)
    scale: float
    zero_point: int
    rmse_over_scale: float
    mean_abs_error_pct_of_range: float
    max_abs_error_over_scale: float
    mean_error_over_scale: float

    @property
    def layer(self) -> str:
        return short_name(self.tensor, self.op)

    def to_dict(self) -> dict:
        return {**asdict(self), "layer": self.layer}


def short_name(tensor: str, op: str = "") -> str:
    """'model/block_2_depthwise_relu/Relu6;model/...' -> 'block_2_depthwise_relu'; the model's output
    tensor (no Keras layer in its name) -> the op in lower case."""
    first = tensor.split(";")[0]
    parts = first.split("/")
    if len(parts) >= 3:
        return parts[1]
    if len(parts) == 2:
        return _SUFFIX.sub("", first).split("/")[-1]
    return op.lower() or first


def parse_statistics(csv_text: str) -> list[LayerError]:
    """The CSV of `QuantizationDebugger.layer_statistics_dump` -> LayerError per op, in execution order."""
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    out: list[LayerError] = []
    for i, r in enumerate(rows):
        scale = float(r["scale"])
        step = scale if scale > 0 else float("nan")
        mse = float(r["mean_squared_error"])
        mae = float(r.get("mean_abs_error") or "nan")
        out.append(LayerError(
            index=i, tensor=r["tensor_name"], op=r["op_name"], scale=scale,
            zero_point=int(float(r["zero_point"])),
            rmse_over_scale=mse ** 0.5 / step,
            mean_abs_error_pct_of_range=100.0 * mae / (255.0 * step),
            max_abs_error_over_scale=float(r["max_abs_error"]) / step,
            mean_error_over_scale=float(r["mean_error"]) / step))
    return out


def rank(errors: Sequence[LayerError], metric: str = "rmse_over_scale") -> list[LayerError]:
    """Worst first by `metric`; ties (and NaN, last) keep execution order, so the ranking is deterministic."""
    def key(e: LayerError):
        v = getattr(e, metric)
        return (v != v, -v if v == v else 0.0, e.index)

    return sorted(errors, key=key)


def by_tensor(errors: Iterable[LayerError]) -> dict[str, LayerError]:
    return {e.tensor: e for e in errors}
