"""Latency of one .tflite variant at one thread count, and which of its ops XNNPACK took.

What is timed: `time.perf_counter` around one `Classifier.predict_pixels` call on one preprocessed image
(input cast/quantise + set_tensor + invoke + get_tensor + dequantise; decoding and resizing excluded), after
`warmup` untimed calls, cycling over the images; then sequential throughput over `batch_throughput_images`
images.  The Keras reference is timed the same way in its own process (`keras_worker`) and converted into the
same record here (`keras_latency_record`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

import numpy as np

from .sysinfo import peak_rss_mb, rss_mb

__all__ = ["LATENCY_FIELDS", "latency_stats", "delegated_op_indices", "delegation_summary", "time_tflite",
           "keras_latency_record"]

LATENCY_FIELDS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")


def latency_stats(seconds: Sequence[float]) -> dict:
    """ms statistics of per-call times (given in s): p50/p90/p99 (linear interp.), mean, std, min, max."""
    t = np.asarray(seconds, dtype=np.float64) * 1e3
    if t.size == 0:
        return {k: None for k in LATENCY_FIELDS}
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(t.mean()),
            "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0, "min_ms": float(t.min()),
            "max_ms": float(t.max())}


def _is_delegate(op: dict) -> bool:
    return str(op.get("op_name", "")).upper() == "DELEGATE"


def delegated_op_indices(ops: list[dict]) -> set[int]:
    """Indices of the original ops that a delegate took, from an interpreter's node list
    (`_get_ops_details()`): an op is delegated when it lies between a DELEGATE node's inputs and outputs."""
    producer = {int(t): o for o in ops if not _is_delegate(o) for t in o["outputs"]}
    covered: set[int] = set()
    for d in (o for o in ops if _is_delegate(o)):
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in stop:
                continue
            seen.add(t)
            op = producer.get(t)
            if op is None or op["index"] in covered:
                continue
            covered.add(op["index"])
            stack.extend(int(x) for x in op["inputs"] if int(x) >= 0)
    return covered


def delegation_summary(interpreter) -> dict | None:
    """Which ops a delegate (XNNPACK) took: {partitions, ops_total, ops_delegated, not_delegated: {op: n}}.

    Uses the interpreter's node list (`_get_ops_details`, experimental): delegate nodes are named
    'DELEGATE'; an original op is delegated when it lies between a delegate node's inputs and outputs.
    None when the backend does not expose the node list.
    """
    try:
        ops = interpreter._get_ops_details()
    except Exception:  # noqa: BLE001 - the interpreter's experimental API; absent or different in some backends
        return None
    covered = delegated_op_indices(ops)
    originals = [o for o in ops if not _is_delegate(o)]
    not_delegated: dict[str, int] = {}
    for o in originals:
        if o["index"] not in covered:
            not_delegated[o["op_name"]] = not_delegated.get(o["op_name"], 0) + 1
    return {"partitions": sum(1 for o in ops if _is_delegate(o)), "ops_total": len(originals),
            "ops_delegated": len(covered), "not_delegated": not_delegated}


def time_tflite(path, threads: int, pixels: np.ndarray, cfg, advance: Callable[[int], None]) -> dict:
    """The latency record (result LATENCY_KEYS) of one .tflite at one thread count, in a fresh Classifier."""
    from ..runtime import Classifier

    gc.collect()
    rss_before = rss_mb()
    clf = Classifier(path, num_threads=int(threads), use_xnnpack=cfg.use_xnnpack)
    n = len(pixels)
    for i in range(cfg.warmup):
        clf.predict_pixels(pixels[i % n][None])
    advance(cfg.warmup)
    times = []
    perf = time.perf_counter
    for i in range(cfg.runs):
        x = pixels[i % n][None]
        t0 = perf()
        clf.predict_pixels(x)
        times.append(perf() - t0)
    advance(cfg.runs)
    b = int(cfg.batch_throughput_images)
    tput = None
    if b > 0:
        batch = pixels[np.arange(b) % n]
        t0 = perf()
        clf.predict_pixels(batch)
        elapsed = perf() - t0
        tput = b / elapsed if elapsed > 0 else None
        advance(b)
    rec = {"threads": int(threads), "backend": clf.backend, "backend_version": clf.backend_version,
           "xnnpack": bool(cfg.use_xnnpack), "delegate": delegation_summary(clf.interpreter),
           "load_ms": clf.load_seconds * 1e3, "warmup": int(cfg.warmup), "runs": int(cfg.runs),
           **latency_stats(times), "throughput_images": b, "throughput_img_s": tput,
           "rss_before_mb": rss_before, "rss_after_mb": rss_mb(), "process_peak_rss_mb": peak_rss_mb()}
    del clf
    gc.collect()
    return rec


def keras_latency_record(rec: dict) -> dict:
    """A keras_worker record -> the same latency record as a .tflite's (plus import time and TF threads)."""
    out = {"threads": rec["threads"], "backend": "tensorflow (Keras eager call)",
           "backend_version": rec.get("tensorflow"), "xnnpack": False, "delegate": None,
           "load_ms": rec["load_s"] * 1e3, "warmup": rec["warmup"], "runs": rec["runs"],
           **latency_stats(rec["times_s"]), "throughput_images": rec["batch_images"],
           "throughput_img_s": rec.get("throughput_img_s"), "rss_before_mb": None,
           "rss_after_mb": rec.get("rss_mb"), "process_peak_rss_mb": rec.get("peak_rss_mb")}
    out["import_s"] = rec.get("import_s")
    out["intra_op_threads"] = rec.get("intra_op_threads")
    out["inter_op_threads"] = rec.get("inter_op_threads")
    out["note"] = ("own process: TF intra-op threads = threads, inter-op threads = 1; "
                   "model(x, training=False) on a (1,S,S,3) float32 batch")
    return out
