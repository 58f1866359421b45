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
`options` (JSON-able) are recorded in the variant's manifest entry.  A hook may also be given by name: a
module that owns one calls `register_hook(name, fn)` (the built-in "float_fallback" of int8 / int8_mixed is
registered by `wbc_edge.export.selective`, which the converter imports), so this registry never imports the
TensorFlow side itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..core.errors import WbcEdgeError

__all__ = ["VariantSpec", "VARIANTS", "register", "unregister", "get", "specs", "names", "default_names",
           "integer_names", "variant_file", "spec_for_file", "is_unquantised", "tuner", "HOOKS", "register_hook", "GATE_FAMILIES", "IO_DTYPES"]

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
    converter_hook: Callable[..., bytes | None] | str | None = field(default=None, compare=False, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: options a user may set from the command line for this variant (`wbc-edge export --int8-float-layers`,
    #: `tuner()`); its defaults are also what `wbc-edge diagnose` ranks layers with
    tunes: tuple[str, ...] = field(default=(), compare=False)

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
        missing = [t for t in self.tunes if t not in self.options]
        if missing:
            raise ValueError(f"variant {self.name}: tunes {missing} not in its options")
        object.__setattr__(self, "tunes", tuple(self.tunes))
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
                "converter_hook": None if self.converter_hook is None else self.converter_hook
                if isinstance(self.converter_hook, str) else getattr(self.converter_hook, "__qualname__", "custom")}

    def hook(self) -> Callable[..., bytes | None] | None:
        """The converter hook to run: the callable given, or the one registered under the name given."""
        if self.converter_hook is None or callable(self.converter_hook):
            return self.converter_hook
        try:
            return HOOKS[self.converter_hook]
        except KeyError:
            raise WbcEdgeError(f"variant {self.name!r}: converter hook {self.converter_hook!r} is not registered "
                               f"(known: {', '.join(HOOKS) or 'none'})") from None


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


#: Converter hooks by name (`register_hook`); a spec's `converter_hook` may name one.
HOOKS: dict[str, Callable[..., bytes | None]] = {}


def register_hook(name: str, fn: Callable[..., bytes | None]) -> None:
    """Make `fn` the converter hook a spec can name (the module that owns it calls this at import)."""
    HOOKS[name] = fn


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


def tuner(option: str) -> VariantSpec:
    """The registered variant whose `option` the command line sets (the first that declares it in `tunes`):
    the CLI and diagnose ask the registry instead of naming a variant."""
    for spec in VARIANTS.values():
        if option in spec.tunes:
            return spec
    raise WbcEdgeError(f"no registered variant takes the option {option!r}")


def is_unquantised(spec: VariantSpec | None) -> bool:
    """The spec converts the float graph as trained (no optimisation, no QAT, float I/O): the variant whose
    outputs equal the Keras model's, hence the default reference."""
    return (spec is not None and not spec.optimizations and not spec.supported_types and not spec.qat
            and not spec.representative_data and spec.io_dtype is None and not spec.integer_io)


def spec_for_file(file_name: str) -> VariantSpec | None:
    """The registered spec that writes `file_name` (bench: a .tflite without a contract), else None."""
    return next((s for s in VARIANTS.values() if s.file == file_name), None)


# --------------------------------------------------------------------------------------------- built-ins

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
    # PBC val: agreement with float32 on shifted val 96.50 -> 98.83 %, +8 % latency, +0.02 MB.  Ops reading more
    # than 16,384 weights stay int8 (issue 33): the default model's 4 picks read <= 6,400, but a small model's
    # ranking can pick a 92,000-weight projection, +0.28 MB on a 0.9 MB file.
    VariantSpec("int8", "int8 PTQ (4 most sensitive ops float), uint8 I/O",
                "Post-training int8, uint8 raw-pixel input and uint8 output; the 4 ops whose int8 error is "
                "largest on shifted views of the calibration images stay float (faithful off-domain: "
                "benchmarks/int8_faithful/); ops with more than 16,384 weights stay int8 (size).", cli_flag="--int8",
                default=True, recommended=True,
                converter_hook="float_fallback", options={"float_layers": 4, "rank_images": 100,
                                                          "rank_metric": "rmse_over_scale", "rank_on": "shifted",
                                                          "max_float_weights": 16384},
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
                converter_hook="float_fallback", tunes=("float_layers",), options={"float_layers": 8, "rank_images": 100,
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
