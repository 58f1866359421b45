"""What a converted model's input and output tensors are, read back with the TF-free interpreter.

The contract and the Android bundle record the quantisation the converter actually chose (never what we
asked for), so both read it from the model here.
"""

from __future__ import annotations

import os

import numpy as np


def tensor_details(model: bytes | str | os.PathLike) -> tuple[dict, dict]:
    """(input details, output details) of a one-input, one-output .tflite model (bytes or a path)."""
    from ..runtime import load_backend

    from ..core.quiet import native_stderr_captured

    backend = load_backend()
    with native_stderr_captured():  # LiteRT's "INFO: Created ... XNNPACK delegate" line (--debug shows it)
        if isinstance(model, (bytes, bytearray)):
            interp = backend.interpreter_cls(model_content=bytes(model))
        else:
            interp = backend.interpreter_cls(model_path=str(model))
        interp.allocate_tensors()
    ins, outs = interp.get_input_details(), interp.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise ValueError(f"expected one input and one output, got {len(ins)} and {len(outs)}")
    return ins[0], outs[0]


def dtype_name(dtype) -> str:
    return np.dtype(dtype).name


def quant_or_none(details: dict) -> tuple[float | None, int | None]:
    """(scale, zero point) of a tensor; (None, None) for a float tensor without quantisation."""
    scale, zp = details["quantization"]
    if np.dtype(details["dtype"]) == np.float32 and float(scale) == 0.0:
        return None, None
    return float(scale), int(zp)


def check_input_quantisation(input_details: dict) -> str | None:
    """None when a uint8 input takes raw pixels (scale exactly 1.0, zero point 0), else the problem."""
    dtype = np.dtype(input_details["dtype"])
    scale, zp = input_details["quantization"]
    if dtype != np.uint8 or float(scale) != 1.0 or int(zp) != 0:
        return (f"input is {dtype.name} with scale {float(scale)!r}, zero point {int(zp)}; expected uint8 "
                "raw pixels (scale 1.0, zero point 0) - the calibration data must span 0..255")
    return None
