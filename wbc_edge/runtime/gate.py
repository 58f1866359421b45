"""The unfamiliar-lab gate on the device: which images, and which batches, lie far from the training labs.

`LabGate("export/gate/wbc_gate.tflite")` reads `wbc_gate.json` beside it (written by `wbc-edge export-gate`).
`distances(pixels)`: each image's squared Mahalanobis distance to the nearest training class in the model's
pooled features; `far(...)`: beyond the cut (95 % of the model's own val images are within it); `batch(...)`:
for >= 20 cells, "unfamiliar lab" when their median distance exceeds `batch_ratio` x the val median - what an
app scanning a slide can act on ("check these cells with crossdomain, then adapt").  numpy + the interpreter.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import ModelFileError
from ..core.quiet import native_stderr_captured


def gate_interpreter(blob_or_path, num_threads: int | None = None):
    """An allocated interpreter for a gate flatbuffer (bytes or path); LiteRT's start-up line kept quiet."""
    from .backend import load_backend

    backend = load_backend()
    kwargs = {"model_content": bytes(blob_or_path)} if isinstance(blob_or_path, (bytes, bytearray)) else \
        {"model_path": str(blob_or_path)}
    if num_threads is not None:
        kwargs["num_threads"] = int(num_threads)
    with native_stderr_captured():
        it = backend.interpreter_cls(**kwargs)
        it.allocate_tensors()
    return it


def min_distances(it, pixels: np.ndarray) -> np.ndarray:
    """Per-image minimum distance (one invoke per image) from a gate interpreter on uint8 pixels (N, S, S, 3)."""
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    res = np.empty(len(pixels), dtype=np.float64)
    for i in range(len(pixels)):
        it.set_tensor(inp["index"], np.asarray(pixels[i:i + 1], dtype=np.float32))
        it.invoke()
        res[i] = float(np.min(it.get_tensor(out["index"])[0]))
    return res


def distances_of_blob(blob_or_path, pixels: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """`min_distances` through a one-off interpreter (export's val-split fit)."""
    return min_distances(gate_interpreter(blob_or_path, num_threads), pixels)


@dataclass(frozen=True)
class BatchVerdict:
    n: int
    median_ratio: float      # the batch's median distance / the val median
    unfamiliar: bool         # median_ratio > batch_ratio (and n >= batch_min)
    far_share: float         # share of the batch's images beyond the cut


def batch_verdict(distances, *, val_median: float, batch_ratio: float, batch_min: int,
                  cut: float) -> BatchVerdict:
    """The batch decision from per-image distances and the gate's numbers (LabGate.batch; LabGate.kt ports it)."""
    d = np.asarray(distances, dtype=np.float64)
    ratio = float(np.median(d) / val_median) if len(d) else 0.0
    return BatchVerdict(n=len(d), median_ratio=ratio, unfamiliar=len(d) >= batch_min and ratio > batch_ratio,
                        far_share=float(np.mean(d > cut)) if len(d) else 0.0)


#: The decisions `decide` returns: the answer may be used, or why not.
ACCEPT, UNCERTAIN, UNFAMILIAR_LAB, FAR = "accept", "uncertain", "unfamiliar-lab", "far"


def decide(confident: bool, distance: float | None = None, verdict: BatchVerdict | None = None, *,
           cut: float = float("inf"), batch_min: int = 20) -> str:
    """One accept/refuse decision from confidence, the gate and the batch (issue 32 item 5).

    Refused: not confident (below the contract's abstain threshold: "uncertain"); part of a batch of
    >= batch_min cells that the gate calls an unfamiliar lab ("unfamiliar-lab": every cell of it, however
    confident - off-domain confidence is what lets wrong answers through); for a single cell or a batch too
    small to judge, a cell beyond the cut ("far").  In a batch judged familiar a far cell is accepted: the
    per-cell cut also refuses ~4 % of the training lab's own cells, the batch median does not (measured in
    benchmarks/gate/).  The Android bundle's LabGate.kt makes the same decision."""
    if not confident:
        return UNCERTAIN
    if verdict is not None and verdict.n >= batch_min:
        return UNFAMILIAR_LAB if verdict.unfamiliar else ACCEPT
    if distance is not None and distance > cut:
        return FAR
    return ACCEPT


class LabGate:
    """The gate file and its thresholds (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None):
        self.path = Path(path)
        meta_path = self.path.with_suffix(".json")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            self.cut, self.val_median = float(self.meta["cut"]), float(self.meta["val_median"])
            self.batch_ratio, self.batch_min = float(self.meta["batch_ratio"]), int(self.meta["batch_min"])
            self.input_size = int(self.meta["input_size"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{meta_path}: not a readable gate description ({type(exc).__name__}: {exc}); "
                                 "it is written beside the gate by `wbc-edge export-gate`") from None
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: gate file not found")
        import hashlib

        from .tflite_check import flatbuffer_problem

        data = self.path.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.meta.get("sha256"):
            raise ModelFileError(f"{self.path}: sha256 differs from {meta_path.name} (another gate's description?)")
        problem = flatbuffer_problem(data)  # untrusted input: bounds-checked before any interpreter sees it
        if problem:
            raise ModelFileError(f"{self.path}: not a sound TFLite flatbuffer ({problem})")
        self.num_threads = num_threads
        # One interpreter for the gate's life, from the bytes just checked: `predict` calls it once per image.
        self._interpreter = gate_interpreter(data, num_threads)

    def distances(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels)
        if pixels.ndim == 3:
            pixels = pixels[None]
        if pixels.shape[1:] != (self.input_size, self.input_size, 3):
            raise ModelFileError(f"{self.path}: takes ({self.input_size}, {self.input_size}, 3) pixels, got "
                                 f"{pixels.shape[1:]}")
        return min_distances(self._interpreter, pixels)

    def far(self, distances: np.ndarray) -> np.ndarray:
        return np.asarray(distances) > self.cut

    def decide(self, confident: bool, distance: float | None = None, verdict: BatchVerdict | None = None) -> str:
        """`decide` with this gate's cut and batch size."""
        return decide(confident, distance, verdict, cut=self.cut, batch_min=self.batch_min)

    def batch(self, distances: np.ndarray) -> BatchVerdict:
        return batch_verdict(distances, val_median=self.val_median, batch_ratio=self.batch_ratio,
                             batch_min=self.batch_min, cut=self.cut)


__all__ = ["ACCEPT", "FAR", "UNCERTAIN", "UNFAMILIAR_LAB", "BatchVerdict", "LabGate", "batch_verdict", "decide", "distances_of_blob", "gate_interpreter", "min_distances"]
