"""What to benchmark and how: `BenchConfig`, the one typed description of a bench run.

The CLI's defaults are read from this dataclass (`wbc_edge.cli.bench_cmd`), and the config is recorded
verbatim in every result (`result["config"]`), so a result says how it was made.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import WbcEdgeError

__all__ = ["BenchConfig", "CLIENTS", "SPLITS", "validate_config"]

#: Clients bench can run the .tflite files through besides the runtime ("mediapipe": MediaPipe Tasks).
CLIENTS = ("mediapipe",)
SPLITS = ("train", "val", "test")


@dataclass
class BenchConfig:
    """What to benchmark and how.  Only `models` and `data` are required.

    models: .tflite files, or export folders (every variant its manifest.json lists as written).
    data: an ImageFolder root.  With `split_manifest` its `split` rows are used (paths relative to `data`);
        without, every valid image found by scanning `data` for the models' classes.
    reference: a .keras (Keras, timed in a subprocess) or .tflite model; None = the unquantised (float32)
        .tflite among `models` (its Keras parity, if the export's manifest.json sits beside it, is included).
    limit: use at most this many images: a class-balanced subset, the same on every machine
        (`wbc_edge.data.balanced_indices`: equal shares per class, each class in input order).
    threads: thread counts to time each variant with.
    max_accuracy_drop (pp) / min_agreement (%): the gate; None = not checked.
    ttfp: time-to-first-prediction subprocesses; None = on when the reference is a .keras.
    keras_timing: time the .keras reference (its probabilities are computed either way).
    device_name: a label for `merge` tables (default: the CPU model).
    python: the interpreter for subprocesses (default: sys.executable).
    clients: also run each .tflite through these clients ("mediapipe": MediaPipe Tasks ImageClassifier).
    domains: other labs' labelled ImageFolders ("ROOT" or "NAME=ROOT"): every .tflite's agreement with the
        reference is also measured (and gated by min_agreement) on each of them (wbc_edge.bench.crossdomain).
    scale_guard: feed every model the reference's scale-guarded pixels, as the runtime does (the MediaPipe
        client, which cannot apply it, gets the plain preprocessed pixels to compare against).
    """

    models: Sequence[str | os.PathLike]
    data: str | os.PathLike | None = None
    reference: str | os.PathLike | None = None
    split_manifest: str | os.PathLike | None = None
    split: str = "test"
    limit: int | None = None
    threads: Sequence[int] = (1,)
    runs: int = 50
    warmup: int = 5
    batch_throughput_images: int = 64
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    use_xnnpack: bool = True
    ttfp: bool | None = None
    keras_timing: bool = True
    device_name: str | None = None
    python: str | None = None
    clients: Sequence[str] = ()
    domains: Sequence[str] = ()
    scale_guard: bool = True

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["models"] = [str(m) for m in self.models]
        d["threads"] = [int(t) for t in self.threads]
        d["clients"] = [str(c) for c in self.clients]
        d["domains"] = [str(x) for x in self.domains]
        for k in ("data", "reference", "split_manifest"):
            d[k] = None if d[k] is None else str(d[k])
        return d


def validate_config(cfg: BenchConfig) -> None:
    """One-line WbcEdgeError for a setting that cannot work, before any model is loaded."""
    threads = [int(t) for t in cfg.threads]
    if not threads or any(t < 1 for t in threads):
        raise WbcEdgeError(f"threads must be positive integers, got {list(cfg.threads)}")
    if cfg.runs < 1:
        raise WbcEdgeError(f"runs must be >= 1, got {cfg.runs}")
    if cfg.warmup < 0 or cfg.batch_throughput_images < 0:
        raise WbcEdgeError("warmup and batch_throughput_images must be >= 0")
    if cfg.limit is not None and cfg.limit < 1:
        raise WbcEdgeError(f"limit must be >= 1, got {cfg.limit}")
    if cfg.split not in SPLITS:
        raise WbcEdgeError(f"split must be train, val or test, got {cfg.split!r}")
    unknown = [c for c in cfg.clients if c not in CLIENTS]
    if unknown:
        raise WbcEdgeError(f"unknown client(s) {', '.join(unknown)} (known: {', '.join(CLIENTS)})")
