"""The variant registry: every TFLite variant `wbc-edge export` can write, described once as data.

    from wbc_edge.export.variants import VariantSpec, register, get, VARIANTS
    get("int8").file                  # 'wbc_int8.tflite'
    [s.name for s in specs()]         # registration order = export order = manifest order

Why a registry: a variant used to be seven edits (converter branch, file name, CLI flag, help text, gate
family, default set, Android choice).  Now one `VariantSpec` drives the converter settings
(`wbc_edge.export.convert`), the parity gate (`wbc_edge.export.parity`), the manifest entries, the CLI flags
of `wbc-edge export` (generated from `specs()` when the command is built), bench's model resolution and the
export tests.  Adding a variant is `register(VariantSpec(...))` plus its test (docs/ARCHITECTURE.md).

A spec is plain data (TF-free: bench imports this module).  Converter settings are named as strings
("DEFAULT", "float16", "TFLITE_BUILTINS_INT8", "uint8") and turned into TensorFlow objects only at
conversion.  Anything the fields cannot say goes into `converter_hook`: a callable
`hook(converter, ctx) -> bytes | None` run after the standard settings (ctx: `ConvertContext`, with the Keras
model, the calibration pixels and the spec's `options`); returning bytes replaces `converter.convert()`
(e.g. a `tf.lite.experimental.QuantizationDebugger` with a denylist for a selectively quantised model).
`options` (JSON-able) are recorded in the variant's manifest entry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..errors import WbcEdgeError

__all__ = ["VariantSpec", "VARIANTS", "register", "unregister", "get", "specs", "names", "default_names",
           "integer_names", "variant_file", "spec_for_file", "GATE_FAMILIES", "IO_DTYPES"]

#: Which ExportConfig thresholds gate a variant: float (--min-float-agreement) or int8 (--min-int8-agreement
#: and --max-int8-drop).  A spec may override either number with its own.
GATE_FAMILIES = ("float", "int8")
#: Tensor types the converter can give the model's input/output.
IO_DTYPES = ("float32", "uint8", "int8", "int16")
_OPTIMIZATIONS = ("DEFAULT",)
_SUPPORTED_TYPES = ("float16", "int8", "int16")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_]*$")


@dataclass(frozen=True)
class VariantSpec:
    """One exported variant: what the converter does, what comes out, how it is gated and offered.

    name: manifest/contract variant name (lower case, digits, '_').  file: the .tflite name (default
    wbc_<name>.tflite).  summary: one phrase for progress lines.  help: the CLI flag's help.
    cli_flag: the `wbc-edge export` flag ("--int8"); None = only via `--variant NAME`.
    default: in the set written when no variant is chosen.  in_all: written by `--all`.
    optimizations / supported_types / supported_ops: TFLiteConverter settings by name
    (tf.lite.Optimize.<x>, tf.<type>, tf.lite.OpsSet.<x>).  representative_data: feed the calibration
    images (full-integer quantisation).  io_dtype: inference_input_type / inference_output_type (None: the
    float32 graph I/O).  qat: convert a quantization-aware fine-tuned copy (wbc_edge.export.qat) instead of
    the float model.  input_dtype / output_dtype: what the converted model must have (checked).
    gate_family, min_agreement_pct, max_accuracy_drop_pp: the parity gate (None: the family's config value).
    android: may be the Android bundle's model (uint8 raw-pixel I/O).  recommended: the variant clients
    should use first (bench times its first prediction).  converter_hook, options: see the module doc.
    """

    name: str
    summary: str
    help: str
    file: str = ""
    cli_flag: str | None = None
    default: bool = False
    in_all: bool = True
    optimizations: tuple[str, ...] = ()
    supported_types: tuple[str, ...] = ()
    supported_ops: tuple[str, ...] = ()
    representative_data: bool = False
    io_dtype: str | None = None
    qat: bool = False
    input_dtype: str = "float32"
    output_dtype: str = "float32"
    gate_family: str = "float"
    min_agreement_pct: float | None = None
    max_accuracy_drop_pp: float | None = None
    android: bool = False
    recommended: bool = False
    converter_hook: Callable[..., bytes | None] | None = field(default=None, compare=False, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"variant name {self.name!r}: lower-case letters, digits and '_' only")
        if not self.file:
            object.__setattr__(self, "file", variant_file(self.name))
        if not self.file.endswith(".tflite") or "/" in self.file or "\\" in self.file:
            raise ValueError(f"variant {self.name}: file {self.file!r} must be a bare *.tflite name")
        for what, values, allowed in (("optimizations", self.optimizations, _OPTIMIZATIONS),
                                      ("supported_types", self.supported_types, _SUPPORTED_TYPES)):
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f"variant {self.name}: unknown {what} {bad} (known: {list(allowed)})")
        for what, v in (("io_dtype", self.io_dtype), ("input_dtype", self.input_dtype),
                        ("output_dtype", self.output_dtype)):
            if v is not None and v not in IO_DTYPES:
                raise ValueError(f"variant {self.name}: {what} {v!r} not one of {IO_DTYPES}")
        if self.gate_family not in GATE_FAMILIES:
            raise ValueError(f"variant {self.name}: gate_family {self.gate_family!r} not one of {GATE_FAMILIES}")
        if self.cli_flag is not None and not re.match(r"^--[a-z0-9][a-z0-9-]*$", self.cli_flag):
            raise ValueError(f"variant {self.name}: cli_flag {self.cli_flag!r} must look like --name")
        try:
            json.dumps(dict(self.options))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"variant {self.name}: options must be JSON-able ({exc})") from None
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "optimizations", tuple(self.optimizations))
        object.__setattr__(self, "supported_types", tuple(self.supported_types))
        object.__setattr__(self, "supported_ops", tuple(self.supported_ops))

    @property
    def integer_io(self) -> bool:
        """True when the model takes integer pixels (uint8 raw pixels for our int8 variants)."""
        return self.input_dtype != "float32"

    @property
    def needs_calibration(self) -> bool:
        """Calibration images are needed: full-integer conversion, or QAT (its ranges start from them)."""
        return self.representative_data or self.qat

    def converter_settings(self) -> dict:
        """The converter settings as JSON (recorded in the manifest entry)."""
        return {"optimizations": list(self.optimizations), "supported_types": list(self.supported_types),
                "supported_ops": list(self.supported_ops), "representative_data": self.representative_data,
                "io_dtype": self.io_dtype, "qat": self.qat,
                "converter_hook": None if self.converter_hook is None
                else getattr(self.converter_hook, "__qualname__", "custom")}


#: The registered variants, in registration order (= export order).  Iterating gives the names;
#: `VARIANTS[name]` the spec.  Change it only through `register` / `unregister`.
VARIANTS: dict[str, VariantSpec] = {}


def variant_file(name: str) -> str:
    """The default file name of a variant: wbc_<name>.tflite."""
    return f"wbc_{name}.tflite"


def register(spec: VariantSpec, *, replace: bool = False) -> VariantSpec:
    """Add a variant (at the end of the order).  Names, files and CLI flags must be unique unless `replace`
    (then the spec with that name is swapped in place, keeping its position)."""
    if not isinstance(spec, VariantSpec):
        raise TypeError(f"register() takes a VariantSpec, got {type(spec).__name__}")
    if spec.name in VARIANTS and not replace:
        raise ValueError(f"variant {spec.name!r} is already registered (pass replace=True to swap it)")
    for other in VARIANTS.values():
        if other.name == spec.name:
            continue
        if other.file == spec.file:
            raise ValueError(f"variant {spec.name!r}: file {spec.file} is already variant {other.name!r}'s")
        if spec.cli_flag is not None and other.cli_flag == spec.cli_flag:
            raise ValueError(f"variant {spec.name!r}: flag {spec.cli_flag} is already variant {other.name!r}'s")
    VARIANTS[spec.name] = spec
    return spec


def unregister(name: str) -> VariantSpec:
    """Remove a variant (tests that register a throw-away one)."""
    try:
        return VARIANTS.pop(name)
    except KeyError:
        raise WbcEdgeError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})") from None


def get(name: str) -> VariantSpec:
    """The spec of a registered variant; WbcEdgeError naming the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise WbcEdgeError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})") from None


def specs() -> list[VariantSpec]:
    """Every registered spec, in order."""
    return list(VARIANTS.values())


def names() -> tuple[str, ...]:
    return tuple(VARIANTS)


def default_names() -> tuple[str, ...]:
    """The variants written when none is chosen."""
    return tuple(s.name for s in VARIANTS.values() if s.default)


def integer_names() -> tuple[str, ...]:
    """Variants gated as int8 (their calibration and Android candidacy follow from the spec)."""
    return tuple(s.name for s in VARIANTS.values() if s.gate_family == "int8")


def spec_for_file(file_name: str) -> VariantSpec | None:
    """The registered spec that writes `file_name` (bench: a .tflite without a contract), else None."""
    return next((s for s in VARIANTS.values() if s.file == file_name), None)


# --------------------------------------------------------------------------------------------- built-ins

def _int8_mixed_hook(converter, ctx):
    """The int8_mixed converter hook (wbc_edge.export.selective, imported on use: it needs TensorFlow)."""
    from .selective import int8_mixed_hook

    return int8_mixed_hook(converter, ctx)


_INT8 = dict(optimizations=("DEFAULT",), representative_data=True, supported_ops=("TFLITE_BUILTINS_INT8",),
             io_dtype="uint8", input_dtype="uint8", output_dtype="uint8", gate_family="int8", android=True)

for _spec in (
    VariantSpec("float32", "float32", "float32 (the graph as trained).", cli_flag="--float32", default=True),
    VariantSpec("float16", "float16 weights", "float16 weights (float32 I/O).", cli_flag="--float16",
                default=True, optimizations=("DEFAULT",), supported_types=("float16",)),
    VariantSpec("dynamic", "dynamic-range (int8 weights)", "Dynamic-range: int8 weights, float activations.",
                cli_flag="--dynamic", optimizations=("DEFAULT",)),
    # The default int8 (issue 32, benchmarks/int8_faithful/RULE.md): the 4 ops with the largest int8 error on
    # *shifted* views of the calibration images stay float.  Chosen among 10 candidates on PBC val + shifted
    # PBC val: agreement with float32 on shifted val 96.50 -> 98.83 %, +8 % latency, +0.02 MB.
    VariantSpec("int8", "int8 PTQ (4 most sensitive ops float), uint8 I/O",
                "Post-training int8, uint8 raw-pixel input and uint8 output; the 4 ops whose int8 error is "
                "largest on shifted views of the calibration images stay float (faithful off-domain: "
                "benchmarks/int8_faithful/).", cli_flag="--int8", default=True, recommended=True,
                converter_hook=_int8_mixed_hook, options={"float_layers": 4, "rank_images": 100,
                                                          "rank_metric": "rmse_over_scale", "rank_on": "shifted"},
                **_INT8),
    VariantSpec("qat_int8", "full-integer int8 from QAT, uint8 I/O",
                "Full-integer int8 after a short quantization-aware fine-tune (tfmot).", cli_flag="--qat",
                qat=True, **_INT8),
    # float_layers 8: what `wbc-edge diagnose` recommends for the robust 224 px model (benchmarks/diagnose:
    # 40 % fewer Tecom flips than int8, no measurable latency cost, +0.3 MB)
    VariantSpec("int8_mixed", "int8 with the worst layers kept float, uint8 I/O",
                "Selective int8: the --int8-float-layers K ops with the largest int8 error on the "
                "calibration images (QuantizationDebugger RMSE/scale) stay float; uint8 I/O like int8 "
                "(wbc-edge diagnose shows the trade-off).", cli_flag="--int8-mixed",
                converter_hook=_int8_mixed_hook, options={"float_layers": 8, "rank_images": 100,
                                                          "rank_metric": "rmse_over_scale",
                                                          "rank_on": "calibration"},
                **{**_INT8, "android": False}),
    VariantSpec("int8_plain", "full-integer int8 PTQ, uint8 I/O",
                "Full-integer int8 post-training quantisation (every op int8), uint8 raw-pixel input, uint8 output: "
                "the int8 default until 2026-12-07; off-domain it disagrees with float32 more often.",
                cli_flag="--int8-plain", **{**_INT8, "android": False}),
):
    register(_spec)
del _spec
