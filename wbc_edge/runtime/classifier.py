"""The classifier: a .tflite model + its embedded contract -> predictions from images or pixels.

Pixels always come from `wbc_edge.core.preprocess.preprocess` - the same function training and calibration use -
so the model sees exactly the pixels it was trained on; then, when the contract carries one, the scale guard
(`wbc_edge.core.scale_guard`) magnifies a cell far smaller in the frame than the training cells.  Float models get them cast to float32; integer
models get them quantised with the input tensor's own (scale, zero point), which for our uint8 models
(scale 1, zero point 0) is the raw pixels.  Outputs are dequantised with the output tensor's parameters;
probabilities are always float32.  Labels come from the model's contract (or, for a file without one, from
the caller) - never from a global class list.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..core.contract import ModelContract
from ..core.errors import ModelFileError, WbcEdgeError, first_line
from ..core.preprocess import ImageSource, preprocess
from ..core.quiet import native_stderr_captured
from ..core.scale_guard import ScaleGuard, guard_pixels
from .backend import load_backend
from .model_file import read_model_file
from .prediction import Prediction, make_prediction

__all__ = ["Classifier", "DEFAULT_FALLBACK_MARGIN", "margins"]

_INT_DTYPES = (np.uint8, np.int8, np.int16)
#: Calibrated top-1 minus top-2 probability below which the cascade re-runs an image in the float file.
#: Chosen by the rule in benchmarks/cascade/RULE.md on PBC val and shifted PBC val only (benchmarks/cascade/):
#: 0.5 for the plain int8 file, 0.1 for the faithful default int8 of 2026-12-07 (it needs fewer re-runs to
#: reach the rule's agreement; off-domain a larger --fallback-margin re-runs more and agrees more).
DEFAULT_FALLBACK_MARGIN = 0.1


class Classifier:
    """A .tflite image classifier.

    Args:
        model_path: a .tflite file.  Its embedded wbc-edge contract supplies labels and the input contract.
        num_threads: interpreter threads; None leaves the backend's default (LiteRT: 1).
        labels: labels in output order.  Required for a model without embedded metadata; for a model with a
            contract they must equal the contract's labels (anything else would relabel the outputs).
        use_xnnpack: False selects `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES` (reference kernels),
            where the backend supports it.
        min_confidence: flag predictions below this (calibrated) confidence as uncertain; None = the
            model's recommended abstain threshold (0 for models without calibration).
        scale_guard: apply the contract's scale guard in `preprocess` / `predict` (False: never magnify).
        fallback: a float .tflite of the same model (float16 or float32; a path or a Classifier): the cascade.
            An image whose calibrated top-1 minus top-2 probability from this (quantised) model is below
            `fallback_margin` is run again in the float file, and the float answer is returned - a quantised
            file then rarely answers where the float model would not, at the cost of a second inference on
            the few low-margin images (`benchmarks/cascade/`).  `last_fallback` says which images of the last
            `predict_pixels` call were re-run; `Prediction.fallback` says it per prediction.
        fallback_margin: the margin below which an image is re-run (default: `DEFAULT_FALLBACK_MARGIN`).

    Raises ModelFileError (one line, naming the file) for a missing / non-TFLite / corrupt file, a model
    without metadata and without `labels`, or a model inconsistent with its metadata.

    Attributes: backend, backend_version, labels, input_size, input_dtype, output_dtype, input_details,
    output_details, contract (ModelContract or None), load_seconds, num_threads, use_xnnpack, interpreter.
    Calls on one instance are serialised by a lock (an interpreter is not re-entrant); use one Classifier
    per thread to run in parallel.
    """

    def __init__(self, model_path: str | os.PathLike, num_threads: int | None = None,
                 labels: Sequence[str] | None = None, use_xnnpack: bool = True,
                 min_confidence: float | None = None, scale_guard: bool = True,
                 fallback: str | os.PathLike | Classifier | None = None, fallback_margin: float | None = None):
        t0 = time.perf_counter()
        path = Path(model_path)
        self.model_path = path
        self.num_threads = num_threads
        self.use_xnnpack = bool(use_xnnpack)
        if num_threads is not None and (not isinstance(num_threads, int) or num_threads < 1):
            raise WbcEdgeError(f"num_threads must be a positive integer or None, got {num_threads!r}")
        contract = read_model_file(path)

        backend = load_backend()
        self.backend = backend.name
        self.backend_version = backend.version
        kwargs: dict = {"model_path": str(path)}
        if num_threads is not None:
            kwargs["num_threads"] = int(num_threads)
        if not self.use_xnnpack:
            resolver = backend.op_resolver_type
            if resolver is None or not hasattr(resolver, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"):
                raise WbcEdgeError(f"use_xnnpack=False is not supported by {backend.name} {backend.version}")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            with native_stderr_captured():  # LiteRT's "INFO: Created ... XNNPACK delegate" line (--debug shows it)
                interp = backend.interpreter_cls(**kwargs)
                interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            if "find op for builtin opcode" in str(exc):  # e.g. tflite-runtime 2.14 on a dynamic-range model
                raise ModelFileError(f"{path}: {backend.name} {backend.version} cannot run this model (an op "
                                     f"version it does not know: {first_line(exc)}); use ai-edge-litert, or "
                                     "another variant (int8 / float32)") from None
            raise ModelFileError(f"{path}: not a loadable TFLite model (corrupt or truncated?): "
                                 f"{first_line(exc)}") from None
        self.interpreter = interp
        self.input_details = interp.get_input_details()
        self.output_details = interp.get_output_details()
        self.contract: ModelContract | None = contract
        self._check_tensors(path)
        self.labels: tuple[str, ...] = self._resolve_labels(path, contract, labels)
        self._check_contract(path, contract)
        if min_confidence is not None and not 0.0 <= float(min_confidence) <= 1.0:
            raise WbcEdgeError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        self.temperature = float(contract.temperature) if contract and contract.temperature else 1.0
        self.abstain_threshold = (float(min_confidence) if min_confidence is not None else
                                  float(contract.abstain_threshold or 0.0) if contract else 0.0)
        self.scale_guard: ScaleGuard | None = (ScaleGuard.from_dict(contract.scale_guard)
                                               if scale_guard and contract and contract.scale_guard else None)
        self._lock = threading.Lock()
        self.fallback: Classifier | None = None
        self.fallback_margin = DEFAULT_FALLBACK_MARGIN if fallback_margin is None else float(fallback_margin)
        if not 0.0 <= self.fallback_margin <= 1.0:
            raise WbcEdgeError(f"fallback_margin must be in [0, 1], got {fallback_margin!r}")
        self.last_fallback = np.zeros(0, dtype=bool)
        if fallback is not None:
            self.fallback = fallback if isinstance(fallback, Classifier) else Classifier(
                fallback, num_threads=num_threads, use_xnnpack=use_xnnpack, min_confidence=min_confidence,
                scale_guard=scale_guard)
            self._check_fallback(path, self.fallback)
        self.load_seconds = time.perf_counter() - t0

    # -- validation --

    def _check_fallback(self, path: Path, fb: Classifier) -> None:
        """The cascade's float file must be the same model in float: same labels in the same order, same input
        size and contract, float output - else its answers would not be this model's."""
        where = f"{path} -> fallback {fb.model_path}"
        if fb.fallback is not None:
            raise WbcEdgeError(f"{where}: the fallback file has a fallback of its own; give a plain float file")
        if np.dtype(fb.output_dtype) != np.float32 or (fb.contract and fb.contract.variant not in
                                                        (None, "float32", "float16")):
            variant = fb.contract.variant if fb.contract else fb.output_dtype
            raise ModelFileError(f"{where}: the fallback must be a float file (float16 or float32), got {variant}")
        if tuple(fb.labels) != tuple(self.labels):
            raise ModelFileError(f"{where}: labels differ ({','.join(fb.labels)} vs {','.join(self.labels)})")
        if fb.input_size != self.input_size:
            raise ModelFileError(f"{where}: input size {fb.input_size} differs from {self.input_size}")
        if abs(fb.temperature - self.temperature) > 1e-6:
            raise ModelFileError(f"{where}: another model's file (temperature {fb.temperature:g} vs "
                                 f"{self.temperature:g}): export both from one run")

    def _check_tensors(self, path: Path) -> None:
        """One (1, S, S, 3) input and one (1, C) output of supported dtypes, with quantisation where needed."""
        if len(self.input_details) != 1 or len(self.output_details) != 1:
            raise ModelFileError(f"{path}: expected a model with one input and one output, got "
                                 f"{len(self.input_details)} input(s) and "
                                 f"{len(self.output_details)} output(s)")
        inp, out = self.input_details[0], self.output_details[0]
        shape = tuple(int(d) for d in inp["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3 or shape[1] != shape[2] or shape[1] < 1:
            raise ModelFileError(f"{path}: expected input shape (1, S, S, 3) (one RGB square image), "
                                 f"got {shape}")
        self.input_size = shape[1]
        out_shape = tuple(int(d) for d in out["shape"])
        if len(out_shape) != 2 or out_shape[0] != 1:
            raise ModelFileError(f"{path}: expected output shape (1, C) (one probability per class), got "
                                 f"{out_shape}")
        self.num_outputs = out_shape[1]
        self.input_dtype = np.dtype(inp["dtype"])
        self.output_dtype = np.dtype(out["dtype"])
        if self.input_dtype != np.float32 and self.input_dtype not in _INT_DTYPES:
            raise ModelFileError(f"{path}: unsupported input dtype {self.input_dtype} "
                                 "(expected float32/uint8/int8)")
        self._in_scale, self._in_zp = _quant(inp)
        self._out_scale, self._out_zp = _quant(out)
        if self.input_dtype in _INT_DTYPES and self._in_scale == 0:
            raise ModelFileError(f"{path}: integer input tensor has no quantisation parameters")
        if self.output_dtype in _INT_DTYPES and self._out_scale == 0:
            raise ModelFileError(f"{path}: integer output tensor has no quantisation parameters")

    def _resolve_labels(self, path: Path, contract: ModelContract | None,
                        given: Sequence[str] | None) -> tuple[str, ...]:
        """The contract's labels, or the caller's for a file without one; never a relabelling."""
        if given is not None:
            labels = [str(x) for x in given]
            source = "the labels given"
        elif contract is not None:
            labels = list(contract.labels)
            source = "its embedded contract"
        else:
            raise ModelFileError(f"{path}: has no wbc-edge metadata (embedded contract); pass labels=[...] "
                                 f"(CLI: --labels a,b,...) with its {self.num_outputs} class names in output "
                                 "order")
        if len(labels) != self.num_outputs:
            raise ModelFileError(f"{path}: {len(labels)} labels from {source} but the model outputs "
                                 f"{self.num_outputs} probabilities")
        if len(set(labels)) != len(labels) or any(not x for x in labels):
            raise ModelFileError(f"{path}: labels from {source} must be unique and non-empty, got {labels}")
        if given is not None and contract is not None and labels != list(contract.labels):
            # Never relabel silently: the embedded labels are the model's own output order.
            same_set = sorted(labels) == sorted(contract.labels)
            what = "are in a different order than" if same_set else "differ from"
            raise ModelFileError(f"{path}: the labels given ({','.join(labels)}) {what} its embedded labels "
                                 f"({','.join(contract.labels)}); a model with metadata needs no labels - "
                                 "leave them out (CLI: drop --labels)")
        return tuple(labels)

    def _check_contract(self, path: Path, contract: ModelContract | None) -> None:
        """The contract's input size and dtypes must be the tensors' own."""
        if contract is None:
            return
        if int(contract.input_size) != self.input_size:
            raise ModelFileError(f"{path}: embedded contract says input_size {contract.input_size} but the "
                                 f"model's input tensor is {tuple(int(d) for d in self.input_details[0]['shape'])};"
                                 " the file's metadata is inconsistent")
        for what, declared, actual in (("input", contract.input_dtype, self.input_dtype),
                                       ("output", contract.output_dtype, self.output_dtype)):
            try:
                declared_dtype = np.dtype(declared) if declared else None
            except TypeError:
                raise ModelFileError(f"{path}: embedded contract has an unknown {what} dtype "
                                     f"{declared!r}") from None
            if declared_dtype is not None and declared_dtype != actual:
                raise ModelFileError(f"{path}: embedded contract says {what} dtype {declared} but the "
                                     f"model's {what} tensor is {actual}")

    def output_order(self, labels: Sequence[str] | None = None) -> np.ndarray:
        """Column indices that put this model's probabilities into `labels` order (default: its own order).

        For comparing against ground truth indexed by another label list (a dataset's, a reference model's):
        `probs[:, clf.output_order(labels)]` maps by NAME (case-insensitive), so a model whose embedded labels
        are ordered differently is scored correctly, never silently relabelled.  Raises ModelFileError when
        the two label sets differ (a class missing, renamed or extra).
        """
        if labels is None:
            labels = self.labels
        want = [str(x).strip().lower() for x in labels]
        have = {lab.strip().lower(): i for i, lab in enumerate(self.labels)}
        if sorted(want) != sorted(have) or len(have) != len(self.labels):
            missing = [x for x in want if x not in have]
            extra = [lab for lab in self.labels if lab.strip().lower() not in want]
            raise ModelFileError(f"{self.model_path}: model labels ({','.join(self.labels)}) do not match "
                                 f"the expected labels ({','.join(str(x) for x in labels)}): missing "
                                 f"{','.join(missing) or '-'}, unexpected {','.join(extra) or '-'}")
        return np.array([have[x] for x in want], dtype=np.int64)

    # -- inference --

    def quantize_input(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (..., S, S, 3) -> what the input tensor takes (float32, or quantised integers)."""
        if self.input_dtype == np.float32:
            return pixels.astype(np.float32)
        if self._in_scale == 1.0 and self._in_zp == 0 and self.input_dtype == np.uint8:
            return pixels  # x / 1 + 0: raw pixels (our uint8 models)
        info = np.iinfo(self.input_dtype)
        q = np.round(pixels.astype(np.float32) / np.float32(self._in_scale) + np.float32(self._in_zp))
        return np.clip(q, info.min, info.max).astype(self.input_dtype)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        """The output tensor's values -> float32 probabilities ((q - zero_point) * scale for integers)."""
        if self.output_dtype in _INT_DTYPES:
            return (raw.astype(np.float32) - np.float32(self._out_zp)) * np.float32(self._out_scale)
        return np.array(raw, dtype=np.float32)

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (N, S, S, 3) (or one (S, S, 3)) as `preprocess` gives them -> float32 probs (N, C).

        One invoke per image (batch 1, as on a device); no preprocessing and no calibration - for benchmarks,
        parity checks and callers that already hold preprocessed pixels.
        """
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            raise WbcEdgeError(f"predict_pixels takes uint8 pixels 0..255 (from preprocess), "
                               f"got dtype {pixels.dtype}")
        if pixels.ndim == 3:
            pixels = pixels[None]
        s = self.input_size
        if pixels.ndim != 4 or pixels.shape[1:] != (s, s, 3):
            raise WbcEdgeError(f"predict_pixels takes (N, {s}, {s}, 3) pixels for this model, "
                               f"got {pixels.shape}")
        out = np.empty((pixels.shape[0], len(self.labels)), dtype=np.float32)
        in_index = self.input_details[0]["index"]
        out_index = self.output_details[0]["index"]
        with self._lock:
            for i in range(pixels.shape[0]):
                self.interpreter.set_tensor(in_index, self.quantize_input(pixels[i:i + 1]))
                self.interpreter.invoke()
                out[i] = self.dequantize_output(self.interpreter.get_tensor(out_index)[0])
        rerun = np.zeros(len(out), dtype=bool)
        if self.fallback is not None:
            rerun = margins(self.calibrated(out)) < self.fallback_margin
            if rerun.any():
                out[rerun] = self.fallback.predict_pixels(pixels[rerun])
        self.last_fallback = rerun
        return out

    def prepare(self, image: ImageSource) -> tuple[np.ndarray, float]:
        """(the pixels this model is fed for `image`, the scale guard's zoom; 1.0 = not magnified):
        `wbc_edge.core.preprocess.preprocess(image, input_size)`, then the contract's scale guard if any."""
        return guard_pixels(preprocess(image, self.input_size), self.scale_guard)

    def preprocess(self, image: ImageSource) -> np.ndarray:
        """The pixels this model is fed for `image` (see `prepare`)."""
        return self.prepare(image)[0]

    def predict(self, image: ImageSource) -> Prediction:
        """A file path, PIL image or uint8 ndarray -> Prediction.  Undecodable files raise BadImageError."""
        pixels, zoom = self.prepare(image)
        probs = self.predict_pixels(pixels[None])[0]
        return self.prediction(probs, zoom, fallback=bool(self.last_fallback[0]))

    def calibrated(self, probs: np.ndarray) -> np.ndarray:
        """Raw output probabilities (N, C) or (C,) -> temperature-scaled ones (unchanged without a temperature)."""
        if self.temperature == 1.0:
            return probs
        from ..core.calibration import apply_temperature

        probs = np.asarray(probs)
        return apply_temperature(probs[None] if probs.ndim == 1 else probs, self.temperature).reshape(probs.shape)

    def prediction(self, raw_probs: np.ndarray, zoom: float = 1.0, fallback: bool = False) -> Prediction:
        """One image's raw output probabilities -> Prediction (calibrated, with the uncertain flag)."""
        return make_prediction(self.calibrated(raw_probs), self.labels, self.abstain_threshold, zoom, fallback)

    def predict_batch(self, images: Iterable[ImageSource]) -> list[Prediction]:
        """`predict` over several images (one invoke each); the first bad image raises BadImageError."""
        return [self.predict(im) for im in images]

    def describe(self) -> str:
        """One line: file, variant, input, backend, threads, load time."""
        variant = self.contract.variant if self.contract is not None else "no metadata"
        threads = "default" if self.num_threads is None else self.num_threads
        s = self.input_size
        cascade = "" if self.fallback is None else (
            f"; margin < {self.fallback_margin:g} re-run in {self.fallback.model_path.name}")
        return (f"{self.model_path.name}: {variant}, input {s}x{s} {self.input_dtype}, "
                f"{len(self.labels)} classes; {self.backend} {self.backend_version}, threads {threads}, "
                f"xnnpack {'on' if self.use_xnnpack else 'off'}, loaded in {self.load_seconds * 1e3:.0f} ms{cascade}")

    def __repr__(self) -> str:
        return (f"Classifier({str(self.model_path)!r}, input_size={self.input_size}, "
                f"labels={list(self.labels)}, backend={self.backend!r})")


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability of each row of (N, C) probabilities (the top-1 itself for one class)."""
    p = np.sort(np.asarray(probs, dtype=np.float32), axis=1)
    return p[:, -1] - (p[:, -2] if p.shape[1] > 1 else 0.0)


def _quant(details: dict) -> tuple[float, int]:
    scale, zp = details.get("quantization", (0.0, 0))
    return float(scale), int(zp)
