"""Keras reference worker for `wbc_edge.bench`: one process per thread count.

    python -m wbc_edge.bench.keras_worker --model model.keras --pixels pixels.npy --threads 2 \
        --runs 50 --warmup 5 --batch-images 64 --json-out t2.json [--probs-out probs.npy]

TensorFlow fixes its thread pools when it initialises, so each thread count needs a fresh process: this one
sets intra-op threads = --threads and inter-op threads = 1 right after importing TensorFlow, before any op
runs.  Timing mirrors the TFLite path of the harness: one `model(x, training=False)` call per image on a
(1, S, S, 3) float32 batch cast from the same preprocessed uint8 pixels (cast and `.numpy()` included),
after --warmup untimed calls; throughput = sequential single-image calls over --batch-images images.
--probs-out writes the probabilities of every image (batches of 32, inference mode, the model's own output
order) for the parity check.  The only module of `wbc_edge.bench` that imports TensorFlow; started by
`wbc_edge.bench.workers.run_keras_worker`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from ..model.network import model_input_size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pixels", required=True, help=".npy uint8 (N, S, S, 3) from wbc_edge.core.preprocess")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--batch-images", type=int, required=True)
    ap.add_argument("--json-out", required=True)
    ap.add_argument("--probs-out")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    from ..core.tfcompat import import_tf

    tf, keras = import_tf()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import_s = time.perf_counter() - t0

    from ..model.network import load_model

    t1 = time.perf_counter()
    model = load_model(args.model)
    load_s = time.perf_counter() - t1
    px = np.load(args.pixels, mmap_mode="r")
    n = len(px)
    size = model_input_size(model)
    if px.shape[1:] != (size, size, 3):
        print(f"error: {args.model} takes {size}x{size} pixels, got {px.shape[1:]}", file=sys.stderr)
        return 2

    if args.probs_out:
        out = [np.asarray(model(np.asarray(px[a:a + 32], dtype=np.float32), training=False))
               for a in range(0, n, 32)]
        np.save(args.probs_out, np.concatenate(out).astype(np.float32))

    def call(x):
        return model(np.asarray(x, dtype=np.float32), training=False).numpy()

    for i in range(args.warmup):
        call(px[i % n][None])
    times = []
    perf = time.perf_counter
    for i in range(args.runs):
        x = px[i % n][None]
        ts = perf()
        call(x)
        times.append(perf() - ts)
    tput = None
    if args.batch_images > 0:
        batch = np.asarray(px[np.arange(args.batch_images) % n])
        ts = perf()
        for i in range(len(batch)):
            call(batch[i:i + 1])
        elapsed = perf() - ts
        tput = args.batch_images / elapsed if elapsed > 0 else None

    from ..core.atomic import write_json
    from .sysinfo import peak_rss_mb, rss_mb

    rec = {"threads": args.threads,
           "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
           "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
           "tensorflow": tf.__version__, "tf_keras": getattr(keras, "__version__", None),
           "import_s": import_s, "load_s": load_s, "warmup": args.warmup, "runs": args.runs,
           "times_s": times, "batch_images": args.batch_images, "throughput_img_s": tput,
           "rss_mb": rss_mb(), "peak_rss_mb": peak_rss_mb(), "pid": os.getpid()}
    write_json(args.json_out, rec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
