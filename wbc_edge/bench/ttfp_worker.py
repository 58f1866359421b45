"""Time to first prediction: a fresh process that imports, loads a model and classifies one image file.

    python -m wbc_edge.bench.ttfp_worker runtime MODEL.tflite IMAGE
    python -m wbc_edge.bench.ttfp_worker keras MODEL.keras IMAGE

What a user waits for when an app or script starts: `runtime` = import `wbc_edge.runtime`, `Classifier(model)`,
`predict(image)`; `keras` = import TensorFlow, `load_model`, `preprocess`, one `model(x)` call.  Prints one
JSON line {in_process_s, label | index}; the caller (`wbc_edge.bench.workers.run_ttfp`) also times the whole
process.  The clock starts before any import here, and `wbc_edge.bench` imports nothing on its own, so
in_process_s covers every import the path needs.
"""

import time

_T0 = time.perf_counter()

import json  # noqa: E402 - after the clock starts, on purpose
import sys  # noqa: E402

PATHS = ("runtime", "keras")


def _runtime(model: str, image: str) -> dict:
    from wbc_edge.runtime import Classifier

    return {"label": Classifier(model).predict(image).label}


def _keras(model: str, image: str) -> dict:
    import numpy as np

    from wbc_edge.model.network import load_model, model_input_size
    from wbc_edge.core.preprocess import preprocess

    m = load_model(model)
    p = np.asarray(m(preprocess(image, model_input_size(m))[None].astype("float32"), training=False))[0]
    return {"index": int(p.argmax())}


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in PATHS:
        print(f"usage: python -m wbc_edge.bench.ttfp_worker {{{'|'.join(PATHS)}}} MODEL IMAGE", file=sys.stderr)
        return 2
    kind, model, image = args
    rec = (_runtime if kind == "runtime" else _keras)(model, image)
    print(json.dumps({"in_process_s": time.perf_counter() - _T0, **rec}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
