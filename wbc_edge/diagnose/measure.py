"""Run flatbuffers on pixels: top-1 predictions, agreement with the float32 reference, 1-thread latency.

TF-free (ai-edge-litert).  Models are in-memory flatbuffers without our contract (the diagnosis compares
candidates before anything is written), so the input/output quantisation is read from the tensors:
a uint8/int8 input gets round(x / scale + zero_point), an integer output is dequantised.  Threads do not
change the outputs (XNNPACK is deterministic per model), so agreement runs use several; latency uses one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np


def _interpreter(blob: bytes, num_threads: int):
    from ai_edge_litert.interpreter import Interpreter

    from ..core.quiet import native_stderr_captured

    with native_stderr_captured():  # LiteRT's delegate INFO line
        it = Interpreter(model_content=blob, num_threads=num_threads)
        it.allocate_tensors()
    return it


def _to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zp = detail["quantization"]
    if dtype == np.uint8 and float(scale) == 1.0 and int(zp) == 0 and x.dtype == np.uint8:
        return x
    info = np.iinfo(dtype)
    return np.clip(np.round(x.astype(np.float32) / scale + zp), info.min, info.max).astype(dtype)


def probabilities(blob: bytes, pixels: np.ndarray, num_threads: int = 2,
                  advance: Callable[[int], None] | None = None) -> np.ndarray:
    """float32 (N, classes) outputs of a flatbuffer on uint8 pixels (N, S, S, 3), one image per invoke."""
    it = _interpreter(blob, num_threads)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    res = np.empty((len(pixels), int(out["shape"][-1])), dtype=np.float32)
    out_dtype = np.dtype(out["dtype"])
    scale, zp = out["quantization"]
    for i in range(len(pixels)):
        it.set_tensor(inp["index"], _to_input(pixels[i:i + 1], inp))
        it.invoke()
        y = it.get_tensor(out["index"])[0]
        res[i] = y if out_dtype == np.float32 else (y.astype(np.float32) - zp) * scale
        if advance is not None:
            advance(1)
    return res


def agreement(pred: np.ndarray, ref: np.ndarray) -> dict:
    """Top-1 agreement of predicted classes with the reference's: %, flips, n."""
    pred, ref = np.asarray(pred), np.asarray(ref)
    n = int(len(ref))
    flips = int(np.sum(pred != ref))
    return {"agreement_pct": round(100.0 * (n - flips) / n, 3) if n else None, "flips": flips, "n": n}


def latency_ms(blobs: Mapping[str, bytes], runs: int = 50, warmup: int = 5,
               block: int = 10) -> dict[str, float]:
    """Median single-image latency (ms, 1 thread, XNNPACK as LiteRT sets it up) per model, measured in
    this process with the models interleaved in blocks of `block` invokes, so a load change on a shared
    machine hits them alike and their ratio holds."""
    its = {}
    for name, blob in blobs.items():
        it = _interpreter(blob, 1)
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], dtype=d["dtype"]))
        for _ in range(warmup):
            it.invoke()
        its[name] = it
    times: dict[str, list[float]] = {n: [] for n in its}
    while min(len(t) for t in times.values()) < runs:
        for name, it in its.items():
            for _ in range(min(block, runs - len(times[name]))):
                t = time.perf_counter()
                it.invoke()
                times[name].append(time.perf_counter() - t)
    return {n: round(1000.0 * float(np.median(t)), 3) for n, t in times.items()}
