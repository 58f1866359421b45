"""Parity of a converted model against its reference on the same images, and the pass/fail gate.

The one implementation export's parity gate and the benchmark's table share, so that "the int8 file passed
export" and "the int8 file's row in the benchmark" are the same numbers (numpy only, TF-free).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from .classification import Metrics, check_indices, compute_metrics


def agreement(pred_a: Any, pred_b: Any) -> float:
    """Fraction of samples on which two models' top-1 predictions (1-D class-index arrays) agree."""
    a = check_indices("pred_a", pred_a)
    b = check_indices("pred_b", pred_b)
    if a.shape != b.shape:
        raise ValueError(f"pred_a and pred_b differ in length: {a.shape[0]} vs {b.shape[0]}")
    return float(np.mean(a == b))


def prob_error(p_a: Any, p_b: Any) -> dict[str, float]:
    """Element-wise |p_a - p_b| of two probability arrays of the same shape: {mean_abs, max_abs}.

    Computed in float64 (so uint8 outputs cannot wrap around).  A non-finite value in either array makes
    both results inf, so that a parity gate `err <= tol` fails instead of being fooled by NaN comparisons.
    """
    a = np.asarray(p_a, dtype=np.float64)
    b = np.asarray(p_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"p_a and p_b differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("p_a and p_b are empty")
    d = np.abs(a - b)
    if not np.isfinite(d).all():
        return {"mean_abs": float("inf"), "max_abs": float("inf")}
    return {"mean_abs": float(d.mean()), "max_abs": float(d.max())}


def per_class_recall_delta(m_variant: Metrics, m_reference: Metrics) -> dict[str, float]:
    """label -> variant recall minus reference recall (negative = the variant misses more of that class).

    Both must use the same labels in the same order.  A class without true samples has recall 0 in both,
    hence delta 0.
    """
    if list(m_variant.labels) != list(m_reference.labels):
        raise ValueError(f"metrics have different labels: {m_variant.labels} vs {m_reference.labels}")
    var, ref = m_variant.per_class, m_reference.per_class
    return {d["label"]: float(d["recall"]) - float(ref[i]["recall"]) for i, d in enumerate(var)}


def parity(probs: Any, ref_probs: Any, y_true: Any, labels: Iterable[str]) -> tuple[dict, Metrics, Metrics]:
    """A variant against its reference on the same images - the numbers export's gate and bench's table share.

    Returns (summary, variant metrics, reference metrics); summary holds n, accuracy, balanced_accuracy,
    macro_f1, reference_accuracy, delta_accuracy_pp, agreement_pct, mean_abs_dprob, max_abs_dprob.
    """
    probs, ref_probs = np.asarray(probs), np.asarray(ref_probs)
    pred, ref_pred = probs.argmax(1), ref_probs.argmax(1)
    m = compute_metrics(y_true, pred, labels, bootstrap=0)
    ref = compute_metrics(y_true, ref_pred, labels, bootstrap=0)
    err = prob_error(probs, ref_probs)
    summary = {"n": m.n, "accuracy": m.accuracy, "balanced_accuracy": m.balanced_accuracy,
               "macro_f1": m.macro_f1, "reference_accuracy": ref.accuracy,
               "delta_accuracy_pp": 100.0 * (m.accuracy - ref.accuracy),
               "agreement_pct": 100.0 * agreement(pred, ref_pred),
               "mean_abs_dprob": err["mean_abs"], "max_abs_dprob": err["max_abs"]}
    return summary, m, ref


def accepted_agreement(probs: np.ndarray, ref_probs: np.ndarray, temperature: float | None,
                       threshold: float) -> dict:
    """Top-1 agreement on the images the variant accepts - its temperature-scaled top-1 at or above `threshold`,
    the answers an app shows without "uncertain": {"accepted_n", "accepted_agreement_pct" (None if none)}."""
    from ..core.calibration import apply_temperature

    probs, ref_probs = np.asarray(probs), np.asarray(ref_probs)
    cal = apply_temperature(probs, temperature) if temperature not in (None, 1.0) else probs
    ok = cal.max(1) >= threshold
    same = probs.argmax(1) == ref_probs.argmax(1)
    return {"accepted_n": int(ok.sum()),
            "accepted_agreement_pct": 100.0 * float(same[ok].mean()) if ok.any() else None}


def gate_reasons(delta_accuracy_pp: float, agreement_pct: float, *, max_drop_pp: float | None = None,
                 min_agreement_pct: float | None = None) -> list[str]:
    """Why a variant fails its parity gate (empty list = passes); None disables a limit."""
    reasons = []
    if max_drop_pp is not None and -delta_accuracy_pp > float(max_drop_pp) + 1e-9:
        reasons.append(f"accuracy drop {-delta_accuracy_pp:.2f} pp > {float(max_drop_pp):g} pp")
    if min_agreement_pct is not None and agreement_pct < float(min_agreement_pct) - 1e-9:
        reasons.append(f"top-1 agreement {agreement_pct:.2f}% < {float(min_agreement_pct):g}%")
    return reasons

__all__ = ["accepted_agreement", "agreement", "gate_reasons", "parity", "per_class_recall_delta", "prob_error"]
