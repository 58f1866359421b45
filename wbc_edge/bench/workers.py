"""Starting bench's worker processes: the Keras reference (`keras_worker`) and time to first prediction
(`ttfp_worker`), each with `python -m` so the harness process itself never imports TensorFlow.

The workers get the parent's environment plus this package on PYTHONPATH (so a source checkout works
without installing) and TensorFlow's quiet, legacy-Keras settings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..core.errors import WbcEdgeError

__all__ = ["python_for", "worker_env", "run_keras_worker", "run_ttfp", "TTFP_WHAT"]

#: What each time-to-first-prediction path covers (result["ttfp"][i]["what"]).
TTFP_WHAT = {"runtime": "fresh python process: import wbc_edge.runtime, Classifier(model), predict(image file)",
             "keras": "fresh python process: import TensorFlow, load_model(.keras), preprocess, model(x)"}


def python_for(cfg) -> str:
    """The interpreter the workers run with (BenchConfig.python, default: this one)."""
    return cfg.python or sys.executable


def worker_env() -> dict:
    """This environment + wbc_edge importable + TensorFlow on legacy Keras.  Quiet is the worker's own
    `import_tf` (TF_CPP_MIN_LOG_LEVEL 3 unless --debug); a level set here would win over it, and "2" let the
    "failed call to cuInit" error through on every CPU-only machine (issue 30)."""
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    return env


def run_keras_worker(cfg, model: Path, pixels_file: Path, threads: int, out_dir: Path, *, probs: bool,
                     timing: bool) -> dict:
    """Run `keras_worker` at one thread count; its JSON record (and, with probs, out_dir/keras_probs.npy)."""
    out_json = out_dir / f"keras_t{threads}.json"
    cmd = [python_for(cfg), "-m", "wbc_edge.bench.keras_worker", "--model", str(model),
           "--pixels", str(pixels_file), "--threads", str(threads), "--runs", str(cfg.runs if timing else 0),
           "--warmup", str(cfg.warmup if timing else 0),
           "--batch-images", str(cfg.batch_throughput_images if timing else 0), "--json-out", str(out_json)]
    if probs:
        cmd += ["--probs-out", str(out_dir / "keras_probs.npy")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=worker_env())
    if proc.returncode != 0 or not out_json.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise WbcEdgeError(f"{model}: the Keras reference worker failed (exit {proc.returncode}): "
                           + " | ".join(tail))
    return json.loads(out_json.read_text(encoding="utf-8"))


def run_ttfp(cfg, kind: str, model: Path, image: str) -> dict:
    """Time one `ttfp_worker` process (kind "runtime" or "keras"); errors are recorded, not raised."""
    t0 = time.perf_counter()
    proc = subprocess.run([python_for(cfg), "-m", "wbc_edge.bench.ttfp_worker", kind, str(model), image],
                          capture_output=True, text=True, env=worker_env())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
        return {"path": kind, "model": str(model), "error": " | ".join(tail), "wall_s": wall}
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"path": kind, "model": str(model), "wall_s": wall, "in_process_s": rec["in_process_s"],
            "what": TTFP_WHAT[kind]}
