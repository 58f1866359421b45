"""Benchmark harness: does every exported variant match the reference, and how fast is it on this device?

    from wbc_edge.bench import BenchConfig, run_bench, to_markdown
    result = run_bench(BenchConfig(["export/wbc_float32.tflite", "export/wbc_int8.tflite"],
                                   data="samples/pbc_sample", threads=(1, 2)))
    print(to_markdown(result))

What is measured (see benchmarks/README.md for how to run it on a host, a Raspberry Pi or a phone):

- **Accuracy parity**, on the same images for every variant and the reference: accuracy, balanced
  accuracy, macro-F1, Δ accuracy vs the reference (percentage points), top-1 agreement with the reference,
  per-class recall Δ, mean / max |Δ probability|, and the images where a variant's top-1 differs from the
  reference's.  The classes are the reference model's (its contract, or the run.json beside a .keras); each
  image is preprocessed ONCE per input size and each variant predicts it once.  Outputs are mapped to the
  reference's label order by each model's own labels, so a model whose embedded labels are in the wrong
  order really scores badly.
- **Latency** per variant per thread count (`timing`): load time, `warmup` untimed calls, `runs` timed
  single-image calls -> p50 / p90 / p99 / mean ± std / min / max, sequential throughput, backend + version,
  XNNPACK and how many ops it took, file size, RSS before/after and the process peak.
- **Keras reference** (a `.keras` file): probabilities and timings come from `python -m
  wbc_edge.bench.keras_worker`, one process per thread count (TensorFlow fixes its thread pools when it
  starts).  The harness process never imports TensorFlow.
- **Time to first prediction** (`ttfp_worker`; default on when the reference is a `.keras`): a fresh
  process that imports, loads and classifies one image file - the runtime (the registry's recommended
  variant) vs Keras.
- **Gate** (`gate`): `max_accuracy_drop` (pp) and `min_agreement` (%) per non-reference variant.
- **Clients** (`clients=("mediapipe",)`): each .tflite through MediaPipe Tasks (`mediapipe_client`).
- **Other domains** (`domains`): agreement on other labs' folders (`wbc_edge.bench.crossdomain`).

Modules, one job each: `config` (BenchConfig), `models` (MODELS, export folders and the reference, from the
export registry and manifest), `data` (the images), `sysinfo`, `timing`, `workers` (+ `keras_worker`,
`ttfp_worker`), `parity`, `gate`, `schema` (result keys, `load_result`), `report` (Markdown), `plots`,
`crossdevice` (`merge`), `run` (`run_bench`), `android` (LiteRT benchmark_model output -> a result),
`mediapipe_client`.

The names below are imported on first use (PEP 562), not when the package is: the worker processes are
started with `python -m wbc_edge.bench.<worker>`, which imports this package first, and time to first
prediction must not start its clock after numpy and the harness were already loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

#: public name -> the module of this package that defines it
_EXPORTS = {
    "BenchConfig": "config", "CLIENTS": "config",
    "run_bench": "run",
    "to_markdown": "report", "write_outputs": "report",
    "plot": "plots",
    "merge": "crossdevice",
    "load_result": "schema", "result_rows": "schema", "SCHEMA_VERSION": "schema", "RESULT_KIND": "schema",
    "MERGE_KIND": "schema", "RESULT_KEYS": "schema", "VARIANT_KEYS": "schema", "LATENCY_KEYS": "schema",
    "ROW_KEYS": "schema",
    "gate_failures": "gate",
    "system_info": "sysinfo", "cpu_model": "sysinfo", "cpu_flags": "sysinfo",
    "latency_stats": "timing", "delegation_summary": "timing", "delegated_op_indices": "timing",
    "keras_input_size": "models",
}

__all__ = ["BenchConfig", "CLIENTS", "LATENCY_KEYS", "MERGE_KIND", "RESULT_KEYS", "RESULT_KIND", "ROW_KEYS",
           "SCHEMA_VERSION", "VARIANT_KEYS", "cpu_flags", "cpu_model", "delegated_op_indices", "delegation_summary",
           "gate_failures", "keras_input_size", "latency_stats", "load_result", "merge", "plot", "result_rows",
           "run_bench", "system_info", "to_markdown", "write_outputs"]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ below imports on demand
    from .config import CLIENTS, BenchConfig
    from .crossdevice import merge
    from .gate import gate_failures
    from .models import keras_input_size
    from .plots import plot
    from .report import to_markdown, write_outputs
    from .run import run_bench
    from .schema import (LATENCY_KEYS, MERGE_KIND, RESULT_KEYS, RESULT_KIND, ROW_KEYS, SCHEMA_VERSION,
                         VARIANT_KEYS, load_result, result_rows)
    from .sysinfo import cpu_flags, cpu_model, system_info
    from .timing import delegated_op_indices, delegation_summary, latency_stats


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
