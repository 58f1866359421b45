"""The parity gate: every exported file against the Keras model, on the same clean pixels (those the runtime
feeds: `preprocess`, then the scale guard the model carries).

`reference` runs the Keras model on the parity split (and `domains` on each --parity-data folder);
`parity_record` compares one variant's outputs with it and applies the variant's gate: its spec's gate
family picks the ExportConfig thresholds (int8: --max-int8-drop and --min-int8-agreement; float:
--min-float-agreement), a spec may set its own.  Off-domain only agreement is gated: on a foreign set of
~100 images one image is 1 pp, so an accuracy-drop gate would be noise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.labels import Labels
from ..core.preprocess import preprocess_batch
from ..core.scale_guard import ScaleGuard, guard_batch
from .config import ExportConfig
from .inputs import domain_name, domain_root
from .variants import VariantSpec


@dataclass
class Reference:
    """Clean pixels, their labels (model label indices) and the Keras model's probabilities on them."""

    pixels: np.ndarray
    labels: np.ndarray
    probs: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.probs.argmax(1) == self.labels)) if len(self.labels) else float("nan")


def keras_probs(model, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    return np.concatenate([model(pixels[s:s + batch_size].astype(np.float32), training=False).numpy()
                           for s in range(0, len(pixels), batch_size)]).astype(np.float32)


def reference(model, paths: Sequence[str], labels: np.ndarray, size: int, batch_size: int,
              guard: ScaleGuard | None = None) -> Reference:
    """The Keras model on the pixels the runtime feeds: `preprocess`, then the model's scale guard."""
    pixels = guard_batch(preprocess_batch(list(paths), size), guard)[0]
    return Reference(pixels, np.asarray(labels, dtype=np.int64), keras_probs(model, pixels, batch_size))


def domains(cfg: ExportConfig, model, size: int, labels: Labels, say,
            guard: ScaleGuard | None = None) -> dict[str, Reference]:
    """name -> Reference for each --parity-data root (every valid image; its class folders must be
    classes of the model, a class may be absent)."""
    from ..data import scan_dataset

    out = {}
    for spec in cfg.parity_domains:
        name, root = domain_name(spec), domain_root(spec)
        scan = scan_dataset(root, labels=labels, progress=False)
        paths = [os.path.join(root, *r.path.split("/")) for r in scan.records]
        idx = np.array([labels.index(r.label) for r in scan.records], dtype=np.int64)
        ref = reference(model, paths, idx, size, cfg.batch_size, guard)
        out[name] = ref
        say(f"Parity domain {name}: {len(paths)} images, Keras accuracy {ref.accuracy:.2%}")
    return out


def gate_for(spec: VariantSpec, cfg: ExportConfig, *, off_domain: bool = False) -> dict:
    """The thresholds a variant must meet: its spec's own, else its gate family's ExportConfig values."""
    int8 = spec.gate_family == "int8"
    agreement = spec.min_agreement_pct if spec.min_agreement_pct is not None else \
        (cfg.min_int8_agreement if int8 else cfg.min_float_agreement)
    if off_domain:
        return {"min_agreement_pct": cfg.min_domain_agreement if cfg.min_domain_agreement is not None
                else agreement}
    drop = spec.max_accuracy_drop_pp if spec.max_accuracy_drop_pp is not None else \
        (cfg.max_int8_drop if int8 else None)
    return {"max_accuracy_drop_pp": drop, "min_agreement_pct": agreement} if drop is not None \
        else {"min_agreement_pct": agreement}


def parity_record(probs: np.ndarray, ref: Reference, labels: Labels, gate: dict, *,
                  temperature: float | None = None, abstain_threshold: float | None = None) -> dict:
    """Parity of a variant with the Keras model on `ref`, gated by `gate` (see `gate_for`).  With the contract's
    abstain threshold, also the agreement on the images the variant accepts (calibrated top-1 at or above it):
    the answers an app shows without "uncertain" (recorded, not gated)."""
    from ..metrics import accepted_agreement, gate_reasons, parity

    p, _, _ = parity(probs, ref.probs, ref.labels, list(labels))
    accepted = {}
    if abstain_threshold is not None and len(probs):
        accepted = accepted_agreement(probs, ref.probs, temperature, abstain_threshold)
        if accepted["accepted_agreement_pct"] is not None:
            accepted["accepted_agreement_pct"] = round(accepted["accepted_agreement_pct"], 4)
    reasons = gate_reasons(p["delta_accuracy_pp"], p["agreement_pct"],
                           max_drop_pp=gate.get("max_accuracy_drop_pp"),
                           min_agreement_pct=gate["min_agreement_pct"])
    return {
        "n": p["n"],
        "accuracy": p["accuracy"],
        "keras_accuracy": p["reference_accuracy"],  # export's reference is always the Keras model
        "delta_accuracy_pp": round(p["delta_accuracy_pp"], 4),
        "agreement_pct": round(p["agreement_pct"], 4),
        "mean_abs_dprob": p["mean_abs_dprob"],
        "max_abs_dprob": p["max_abs_dprob"],
        "balanced_accuracy": p["balanced_accuracy"],
        "macro_f1": p["macro_f1"],
        **accepted,
        "gate": gate,
        "passed": not reasons,
        "reasons": reasons,
    }


def predict_file(path: Path, pixels: np.ndarray, num_threads: int | None) -> np.ndarray:
    """A .tflite file's float32 probabilities on uint8 pixels (wbc_edge.runtime.Classifier, raw outputs)."""
    from ..runtime import Classifier

    return Classifier(path, num_threads=num_threads).predict_pixels(pixels)
