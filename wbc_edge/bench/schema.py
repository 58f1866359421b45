"""The bench result format: its keys, the flat row table `merge` builds on, and reading a result back.

A result is a JSON-able dict, `schema_version` 1, `kind` "wbc-edge-bench" - written by `run_bench` on a host
or converted from LiteRT's `benchmark_model` on Android (`wbc_edge.bench.android`).  Results recorded by
earlier versions (benchmarks/results/) must keep loading: add keys, never rename or remove one.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.atomic import read_json
from ..core.errors import WbcEdgeError

__all__ = ["SCHEMA_VERSION", "RESULT_KIND", "MERGE_KIND", "RESULT_KEYS", "VARIANT_KEYS", "LATENCY_KEYS",
           "ROW_KEYS", "XNNPACK_NOTE", "RSS_NOTE", "LATENCY_NOTE", "result_rows", "load_result"]

SCHEMA_VERSION = 1
RESULT_KIND = "wbc-edge-bench"
MERGE_KIND = "wbc-edge-bench-merge"

#: Top-level keys of a run_bench result (and of a converted benchmark_model result).
RESULT_KEYS = ("schema_version", "kind", "source", "created", "system", "software", "config", "data",
               "reference", "variants", "rows", "ttfp", "memory", "gate", "clients", "domains", "notes", "timings")
#: Keys of each entry of result["variants"].
VARIANT_KEYS = ("name", "path", "kind", "is_reference", "variant", "input_size", "input_dtype", "size_mb",
                "sha256", "labels", "parity", "export_parity", "latency")
#: Keys of each entry of variant["latency"] (one per thread count).
LATENCY_KEYS = ("threads", "backend", "backend_version", "xnnpack", "delegate", "load_ms", "warmup", "runs",
                "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "throughput_images",
                "throughput_img_s", "rss_before_mb", "rss_after_mb", "process_peak_rss_mb")
#: Keys of each entry of result["rows"] (the cross-device table `merge` builds on).
ROW_KEYS = ("device", "arch", "cpu", "os", "backend", "backend_version", "variant", "kind", "is_reference",
            "size_mb", "accuracy", "delta_accuracy_pp", "agreement_pct", "threads", "p50_ms", "p90_ms",
            "mean_ms", "img_s", "load_ms", "xnnpack")

XNNPACK_NOTE = ("LiteRT (ai-edge-litert) applies the XNNPACK delegate by default; --no-xnnpack selects the "
                "builtin reference kernels (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
RSS_NOTE = ("rss_before_mb / rss_after_mb: current resident set size around each variant's load + timing; "
            "process_peak_rss_mb: getrusage ru_maxrss so far - process-wide and monotonic, so it is the "
            "peak of everything run before it too. The Keras reference runs in its own process (its peak "
            "is its own).")
LATENCY_NOTE = ("single-image latency = one predict call from preprocessed uint8 pixels to float "
                "probabilities (cast/quantise, set_tensor, invoke, get_tensor, dequantise); decode + resize "
                "excluded; warm-up calls excluded; img/s = sequential batch-1 calls over "
                "batch_throughput_images images")


def result_rows(result: dict) -> list[dict]:
    """result["rows"]: one ROW_KEYS row per variant x thread count, stamped with the device."""
    sysinfo, rows = result["system"], []
    for v in result["variants"]:
        p = v.get("parity") or {}
        for lat in v.get("latency") or [{}]:
            rows.append({
                "device": sysinfo.get("device"), "arch": sysinfo.get("arch"), "cpu": sysinfo.get("cpu"),
                "os": sysinfo.get("os"), "backend": lat.get("backend"),
                "backend_version": lat.get("backend_version"),
                "variant": v["name"], "kind": v["kind"], "is_reference": v["is_reference"],
                "size_mb": v.get("size_mb"), "accuracy": p.get("accuracy"),
                "delta_accuracy_pp": None if v["is_reference"] else p.get("delta_accuracy_pp"),
                "agreement_pct": None if v["is_reference"] else p.get("agreement_pct"),
                "threads": lat.get("threads"), "p50_ms": lat.get("p50_ms"), "p90_ms": lat.get("p90_ms"),
                "mean_ms": lat.get("mean_ms"), "img_s": lat.get("throughput_img_s"),
                "load_ms": lat.get("load_ms"), "xnnpack": lat.get("xnnpack")})
    return rows


def load_result(path: str | os.PathLike) -> dict:
    """Read a bench result JSON (ours or converted from benchmark_model); checks kind and schema_version."""
    p = Path(path)
    data = read_json(p, WbcEdgeError, missing="result file not found", unreadable="not a readable JSON result")
    if not isinstance(data, dict) or data.get("kind") != RESULT_KIND:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise WbcEdgeError(f"{p}: not a wbc-edge bench result (kind {kind!r})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise WbcEdgeError(f"{p}: schema_version {data.get('schema_version')} is not supported "
                           f"(this wbc-edge reads {SCHEMA_VERSION})")
    return data
