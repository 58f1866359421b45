"""ai-edge-quantizer 0.10 vs the TFLite converter/QuantizationDebugger, on the same float32 model and images.

Run in a throw-away venv (it is not a project dependency):

    python3.11 -m venv /tmp/aeq && /tmp/aeq/bin/pip install ai-edge-quantizer==0.10.0
    /tmp/aeq/bin/python benchmarks/diagnose/compare_aeq.py --float32 F32.tflite --int8 INT8.tflite \
        --pixels PIXELS.npz

F32.tflite / INT8.tflite: the float32 and int8 files `wbc-edge export` writes for the same model (the int8
one is the converter's, for comparison).  PIXELS.npz: uint8 arrays `calibration` (export's calibration
images) and one array per evaluated domain (any other key), e.g. written from `wbc-edge diagnose --cache`.
Prints, per quantiser: calibration seconds, top-1 agreement with float32 per domain, 1-thread latency.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def predict(blob: bytes, x: np.ndarray) -> np.ndarray:
    it = Interpreter(model_content=blob, num_threads=2)
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for k in range(len(x)):
        xi = x[k:k + 1].astype(np.float32)
        if i["dtype"] != np.float32:
            s, z = i["quantization"]
            info = np.iinfo(i["dtype"])
            xi = np.clip(np.round(xi / s + z), info.min, info.max).astype(i["dtype"])
        it.set_tensor(i["index"], xi)
        it.invoke()
        y = it.get_tensor(o["index"])[0].astype(np.float32)
        if o["dtype"] != np.float32:
            y = (y - o["quantization"][1]) * o["quantization"][0]
        out.append(y)
    return np.array(out)


def latency(blob: bytes, n: int = 50) -> float:
    it = Interpreter(model_content=blob, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(5):
        it.invoke()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        it.invoke()
        ts.append(time.perf_counter() - t)
    return 1000 * float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--float32", required=True)
    ap.add_argument("--int8", required=True)
    ap.add_argument("--pixels", required=True)
    args = ap.parse_args()
    from ai_edge_quantizer import quantizer, recipe

    f32 = open(args.float32, "rb").read()
    data = dict(np.load(args.pixels))
    cal = data.pop("calibration").astype(np.float32)
    cal[0, 0, 0, :], cal[0, 0, 1, :] = 0.0, 255.0  # the same input pinning as export
    refs = {k: predict(f32, x).argmax(1) for k, x in data.items()}
    sig = Interpreter(model_content=f32).get_signature_list()
    key = next(iter(sig))
    inp = sig[key]["inputs"][0]

    def report(name: str, blob: bytes, seconds: float | None) -> None:
        agree = {k: round(100 * float(np.mean(predict(blob, x).argmax(1) == refs[k])), 2) for k, x in data.items()}
        print(f"{name}: calibration {seconds if seconds is None else round(seconds, 1)} s, {len(blob)} bytes, "
              f"agreement {agree}, latency {latency(blob):.2f} ms (1 thread)", flush=True)

    report("converter int8 (export)", open(args.int8, "rb").read(), None)
    for name, rec in (("aeq static_wi8_ai8", recipe.static_wi8_ai8()), ("aeq static_wi8_ai16", recipe.static_wi8_ai16())):
        qt = quantizer.Quantizer(f32, rec)
        t = time.perf_counter()
        qsv = qt.calibrate({key: [{inp: cal[i:i + 1]} for i in range(len(cal))]}, num_threads=2)
        seconds = time.perf_counter() - t
        report(name, bytes(qt.quantize(qsv, enable_progress_report=False).quantized_model), seconds)


if __name__ == "__main__":
    main()
