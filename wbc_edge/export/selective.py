"""Selective int8: one calibration of a model, reused for per-layer error and for models whose worst
layers stay float (the `int8_mixed` variant's converter hook; `wbc-edge diagnose` builds on it).

Built on TensorFlow's maintained tool, `tf.lite.experimental.QuantizationDebugger`: it calibrates once
(the expensive part: the float model over every calibration image), then

- `layer_errors(pixels)`: the debug model (NumericVerify after every quantised op) on any images -> the
  per-layer error of wbc_edge.export.layer_error;
- `model(float_layers)`: the same calibration re-quantised with those ops' output tensors denylisted
  (`QuantizationDebugOptions(denylisted_nodes=...)`, `get_nondebug_quantized_model()`): they run in float,
  with dequantise/quantise around them, everything else int8.  The I/O is then made uint8 raw pixels /
  uint8 probabilities as for export's int8 (`modify_model_io_type`, what TFLiteConverter itself runs for
  `inference_input_type=tf.uint8`; tensorflow.lite.python.util, not tf.lite's public namespace), so a mixed
  model is a drop-in for the int8 file.  With no layer
  denylisted this is export's int8 model (same agreement on every image in our runs).

Why not ai-edge-quantizer 0.10: measured on the 224 px model (benchmarks/diagnose/README.md) it gives the same
int8 accuracy from the same min/max calibration, but its per-tensor validation compares whole-model
activations (the error accumulated up to each tensor), its int8 model takes int8 not uint8 input, and it is
a second quantisation stack beside the converter export uses; its a16w8 recipe ran 50x slower (no XNNPACK).

TensorFlow is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import WbcEdgeError
from .variants import register_hook
from .layer_error import LayerError, parse_statistics, rank


#: Seed of the shifted views the layers are ranked on with rank_on="shifted" (train calibration images; the
#: shifted *val* that selection reads uses another seed and other images).
RANK_SHIFT_SEED = 20261207


def shifted_rank_images(pixels: np.ndarray) -> np.ndarray:
    """Each image through a seeded `augment.shifted_view` (float32 out): the stand-in for labs we do not have
    that the default int8 ranks its float ops on (benchmarks/int8_faithful/)."""
    from ..data.augment import shifted_view

    return np.stack([shifted_view(np.clip(x, 0, 255).astype(np.uint8), np.random.default_rng([RANK_SHIFT_SEED, i]))
                     for i, x in enumerate(pixels)]).astype(np.float32)



@contextlib.contextmanager
def _quiet():
    """The converter's and the debugger's chatter off the console: Python-level prints and the native
    quantiser's "fully_quantize: 0, inference_type: 6, ..." lines on fd 2 (shown with WBC_EDGE_DEBUG=1 /
    --debug, and replayed when the block fails)."""
    from ..core.quiet import native_stderr_captured

    with contextlib.redirect_stdout(io.StringIO()), native_stderr_captured():
        yield

class IOWouldChange(WbcEdgeError):
    """Keeping this op float would change the model's uint8 input/output (it touches the graph's I/O)."""


def _mean_abs_error(diffs: np.ndarray) -> float:
    return float(np.mean(np.abs(diffs)))


def rank_subset(pixels: np.ndarray, n: int) -> np.ndarray:
    """`n` evenly spaced images of a calibration batch (label-free, deterministic; the calibration sample is
    class-sorted, so this keeps every class in proportion)."""
    if n >= len(pixels):
        return pixels
    idx = np.unique(np.linspace(0, len(pixels) - 1, n).round().astype(int))
    return pixels[idx]


class _Feed:
    """The debugger's dataset factory: yields the images currently set, one per step, as float32."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels
        self.advance: Callable[[int], None] | None = None

    def __call__(self):
        for i in range(len(self.pixels)):
            yield [np.asarray(self.pixels[i:i + 1], dtype=np.float32)]
            if self.advance is not None:
                self.advance(1)


class Quantiser:
    """A SavedModel calibrated once on `calibration` (float32 (N,S,S,3), export's pinned batch)."""

    def __init__(self, saved_model_dir: str | Path, calibration: np.ndarray):
        from ..core.tfcompat import import_tf

        tf, _ = import_tf()
        self._tf = tf
        self.saved_model_dir = Path(saved_model_dir)
        conv = tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model_dir))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        cal = np.ascontiguousarray(calibration, dtype=np.float32)

        def representative():
            for i in range(len(cal)):
                yield [cal[i:i + 1]]

        conv.representative_dataset = representative
        self._feed = _Feed(cal[:1])
        self._denylist: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        with _quiet():
            self._debugger = tf.lite.experimental.QuantizationDebugger(
                converter=conv, debug_dataset=self._feed, debug_options=self._options((), ()))

    def _options(self, denylist: Sequence[str], ops: Sequence[str]):
        return self._tf.lite.experimental.QuantizationDebugOptions(
            layer_debug_metrics={"mean_abs_error": _mean_abs_error},
            denylisted_nodes=list(denylist) or None, denylisted_ops=list(ops) or None)

    def _use(self, denylist: Sequence[str], ops: Sequence[str] = ()) -> None:
        if (tuple(denylist), tuple(ops)) != self._denylist:
            with _quiet():
                self._debugger.options = self._options(denylist, ops)
            self._denylist = (tuple(denylist), tuple(ops))

    def layer_errors(self, pixels: np.ndarray,
                     advance: Callable[[int], None] | None = None) -> list[LayerError]:
        """Each quantised op's own error on `pixels` (uint8 or float32 (N,S,S,3)), in execution order."""
        if len(pixels) == 0:
            return []
        self._use(())
        self._feed.pixels, self._feed.advance = pixels, advance
        try:
            with _quiet():
                self._debugger.run()
        finally:
            self._feed.advance = None
        buf = io.StringIO()
        self._debugger.layer_statistics_dump(buf)
        return parse_statistics(buf.getvalue())

    def model(self, float_layers: Sequence[str] = (), float_ops: Sequence[str] = ()) -> bytes:
        """The int8 flatbuffer (uint8 I/O) with `float_layers` (output tensor names) and every op of the
        types `float_ops` (e.g. "DEPTHWISE_CONV_2D") left in float.
        IOWouldChange when one of them is the graph's first or last op."""
        from tensorflow.lite.python.util import modify_model_io_type

        self._use(float_layers, float_ops)
        with _quiet():
            blob = self._debugger.get_nondebug_quantized_model()
        try:
            out = bytes(modify_model_io_type(blob, self._tf.uint8, self._tf.uint8))
        except (ValueError, RuntimeError) as exc:
            raise IOWouldChange(f"keeping {', '.join(float_layers)} float changes the uint8 I/O "
                                f"({exc})") from None
        # A float softmax (the graph's last op) leaves the output float32 without an error from the converter.
        kinds = io_types(out)
        if set(kinds) != {"UINT8"}:
            raise IOWouldChange(f"keeping {', '.join(float_layers)} float gives {'/'.join(kinds)} I/O, not uint8")
        return out

    def selective(self, ranked: Sequence[LayerError],
                  ks: Sequence[int]) -> dict[int, tuple[bytes, list[str]]]:
        """{K: (flatbuffer, the K tensors kept float)} for each K, taking the ranked layers worst first and
        passing over any that would change the uint8 I/O (the softmax output, the first op).  A K larger
        than the candidates allow is left out."""
        want = sorted({int(k) for k in ks})
        out: dict[int, tuple[bytes, list[str]]] = {}
        if 0 in want:
            out[0] = (self.model(()), [])
        chosen: list[str] = []
        for e in ranked:
            if len(chosen) >= want[-1]:
                break
            try:
                blob = self.model([*chosen, e.tensor])
            except IOWouldChange:
                continue
            chosen.append(e.tensor)
            if len(chosen) in want:
                out[len(chosen)] = (blob, list(chosen))
        return out

    def float_model(self, float16: bool = False) -> bytes:
        """The float32 (or float16-weights) flatbuffer of the same SavedModel: the reference / a baseline."""
        tf = self._tf
        conv = tf.lite.TFLiteConverter.from_saved_model(str(self.saved_model_dir))
        if float16:
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        with _quiet():
            return bytes(conv.convert())


def int8_mixed_hook(converter, ctx) -> bytes:
    """Export's converter hook of the `int8_mixed` variant (wbc_edge.export.variants): rank the ops on
    `rank_images` of the calibration images by `rank_metric` and keep the worst `float_layers` float
    (ctx.options: the spec's, overridden by ExportConfig.variant_options / --int8-float-layers).  The
    converter export set up is not used: the debugger calibrates from the SavedModel itself.
    The kept layers go into `ctx.record` -> the variant's manifest entry (`float_layers`,
    `float_layers_ranking`)."""
    del converter
    k, n_rank = int(ctx.options["float_layers"]), int(ctx.options["rank_images"])
    cap = ctx.options.get("max_float_weights")
    metric, on = str(ctx.options["rank_metric"]), str(ctx.options.get("rank_on", "calibration"))
    if on not in ("calibration", "shifted"):
        raise WbcEdgeError(f"rank_on {on!r}: 'calibration' or 'shifted'")
    q = Quantiser(ctx.saved_model_dir, ctx.calibration)
    images = rank_subset(ctx.calibration, n_rank)
    ranked = rank(q.layer_errors(shifted_rank_images(images) if on == "shifted" else images), metric)
    plain = q.model(())  # K = 0, and what the weight counts are read from: converted once
    candidates, too_big = ranked, []
    if cap is not None:
        # A float op stores its weights in 4 bytes instead of 1: a wide projection kept float can add more to a
        # small model's file than the whole int8 network beside it (issue 33).  Such ops stay int8.
        counts = weight_counts(plain)
        candidates = [e for e in ranked if counts.get(e.tensor, 0) <= int(cap)]
        too_big = [e.layer for e in ranked[:12] if counts.get(e.tensor, 0) > int(cap)]
    models = {0: (plain, []), **q.selective(candidates, [k])}
    blob, chosen = models[max(models)]
    by = {e.tensor: e for e in ranked}
    ctx.record["float_layers"] = [{"layer": by[t].layer, "op": by[t].op, "tensor": t,
                                   metric: round(float(getattr(by[t], metric)), 4)} for t in chosen]
    ctx.record["float_layers_ranking"] = {"metric": metric, "images": int(min(n_rank, len(ctx.calibration))),
                                          "on": "the calibration images (evenly spaced)" if on == "calibration"
                                          else f"shifted views (seed {RANK_SHIFT_SEED}) of the calibration images "
                                               "(evenly spaced)",
                                          "worst": [by[e.tensor].layer for e in ranked[:12]]}
    if cap is not None:
        ctx.record["float_layers_ranking"]["kept_int8_over_max_float_weights"] = too_big
    return blob


def io_types(flatbuffer: bytes) -> list[str]:
    """The TFLite type names of a model's inputs and outputs, in that order (e.g. ["UINT8", "FLOAT32"])."""
    from .metadata_schema import model_schema

    schema = model_schema()
    graph = schema.Model.GetRootAs(flatbuffer, 0).Subgraphs(0)  # the reader API: no copy of the weights
    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    ends = [graph.Inputs(i) for i in range(graph.InputsLength())] + [graph.Outputs(i) for i in range(graph.OutputsLength())]
    return [names[graph.Tensors(i).Type()] for i in ends]


def weight_counts(flatbuffer: bytes) -> dict[str, int]:
    """{output tensor name: how many constant values (weights, biases) its op reads} for a TFLite model - what
    keeping that op float costs in file size (x 4 bytes instead of 1)."""
    from .metadata_schema import model_schema, unpack_model

    model = unpack_model(model_schema(), flatbuffer, "the int8 model")
    graph = model.subgraphs[0]

    def constant(i: int) -> bool:
        return i >= 0 and model.buffers[graph.tensors[i].buffer].data is not None

    counts: dict[str, int] = {}
    for op in graph.operators:
        n = sum(int(np.prod(graph.tensors[i].shape)) for i in op.inputs if constant(i))
        for o in op.outputs:
            name = graph.tensors[o].name
            counts[name.decode() if isinstance(name, bytes) else name] = n
    return counts


register_hook("float_fallback", int8_mixed_hook)
