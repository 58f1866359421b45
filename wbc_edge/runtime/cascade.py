"""Which float file a quantised one falls back to, when the caller does not say (`wbc-edge predict`'s default).

Why a default at all: the file an app ships (int8) can answer differently from the float model on the few
images where its margin is low, and on another lab's images those are many (benchmarks/cascade/).  An export
folder holds the float files of the same run beside it, so `predict` uses one when it is there.  Found by the
files' own contracts (variant, labels, temperature), not by file names or the export manifest: the runtime
reads nothing the exporter did not put into the file itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.contract import read_contract
from ..core.errors import WbcEdgeError

__all__ = ["FLOAT_VARIANTS", "float_companion", "is_quantised"]

#: Fallback preference: float16 is half the size of float32 and agrees with it to 98-100 % off-domain.
FLOAT_VARIANTS = ("float16", "float32")


def is_quantised(model_path: str | os.PathLike) -> bool:
    """True for a file whose contract names a variant other than float16/float32 (int8, dynamic, QAT...)."""
    c = read_contract(model_path)
    return c is not None and c.variant not in FLOAT_VARIANTS


def float_companion(model_path: str | os.PathLike) -> Path | None:
    """The float16 (else float32) .tflite beside `model_path` that carries the same labels and temperature,
    or None (not quantised, or no such file there)."""
    path = Path(model_path)
    me = read_contract(path)
    if me is None or me.variant in FLOAT_VARIANTS:
        return None
    found: dict[str, Path] = {}
    for other in sorted(path.parent.glob("*.tflite")):
        if other.resolve() == path.resolve():
            continue
        try:
            c = read_contract(other)
        except (OSError, WbcEdgeError):
            continue
        if (c is not None and c.variant in FLOAT_VARIANTS and c.variant not in found and c.labels == me.labels
                and c.input_size == me.input_size and c.temperature == me.temperature):
            found[c.variant] = other
    return next((found[v] for v in FLOAT_VARIANTS if v in found), None)
