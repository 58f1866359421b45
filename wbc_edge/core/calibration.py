"""Calibrated confidence and abstention, in numpy (TF-free: the runtime applies it on a Pi).

Why: a softmax trained with cross-entropy is over-confident, and far more so on another lab's images; a
clinician-facing app needs "unsure" instead of a confident wrong class.  Temperature scaling (Guo et al.
2017) divides the logits by one scalar T fitted on the validation split - it never changes the top-1 class,
only how much the probabilities can be trusted.  The abstain threshold is chosen on the held-out *shifted*
val (synthetic other-lab conditions), so it is set for the conditions where it matters without looking at
any real foreign set.

Our models output softmax probabilities, so log(p) are the logits up to a per-image constant, which softmax
ignores: `apply_temperature(p, T) = softmax(log p / T)`.  int8 outputs are quantised to 1/256 steps, so
probabilities are clipped at 1e-4 before the log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

EPS = 1e-4


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """Probabilities (N, C) -> temperature-scaled probabilities; T = 1 returns them renormalised."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)
    z = np.log(p) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def nll(probs, y) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)
    return float(-np.mean(np.log(p[np.arange(len(y)), np.asarray(y)])))


def fit_temperature(probs, y, lo: float = 0.05, hi: float = 20.0) -> float:
    """The T minimising validation NLL (a log-space grid, then golden-section refinement)."""
    y = np.asarray(y)
    grid = np.exp(np.linspace(np.log(lo), np.log(hi), 60))
    losses = [nll(apply_temperature(probs, t), y) for t in grid]
    i = int(np.argmin(losses))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - g * (b - a), a + g * (b - a)
        if nll(apply_temperature(probs, c), y) < nll(apply_temperature(probs, d), y):
            b = d
        else:
            a = c
    return float((a + b) / 2)


def expected_calibration_error(probs, y, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (the usual 15)."""
    p = np.asarray(probs, dtype=np.float64)
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    correct = pred == np.asarray(y)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for k in range(bins):
        sel = (conf > edges[k]) & (conf <= edges[k + 1])
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def risk_coverage(probs, y) -> dict:
    """Accuracy of the accepted images vs the fraction accepted, accepting the most confident first."""
    p = np.asarray(probs, dtype=np.float64)
    conf = p.max(axis=1)
    order = np.argsort(-conf, kind="stable")
    correct = (p.argmax(axis=1) == np.asarray(y))[order]
    n = np.arange(1, len(order) + 1)
    return {"coverage": (n / len(order)).tolist(), "accuracy": (np.cumsum(correct) / n).tolist(),
            "threshold": conf[order].tolist()}


def choose_threshold(probs, y, target_accuracy: float = 0.95, min_coverage: float = 0.0) -> float:
    """The lowest confidence threshold whose accepted images reach `target_accuracy` (0 if all do)."""
    rc = risk_coverage(probs, y)
    acc, thr, cov = np.array(rc["accuracy"]), np.array(rc["threshold"]), np.array(rc["coverage"])
    ok = np.flatnonzero((acc >= target_accuracy) & (cov >= min_coverage))
    if len(ok) == 0:
        return float(thr[0])  # not reachable: accept only the most confident
    k = int(ok.max())
    return 0.0 if k == len(thr) - 1 else float(thr[k])


def coverage_at(probs, y, threshold: float) -> dict:
    """What a threshold does: the fraction accepted, the accuracy of the accepted images, and the share of
    all images that are accepted and wrong (the confident mistakes a user acts on)."""
    p = np.asarray(probs, dtype=np.float64)
    keep = p.max(axis=1) >= threshold
    correct = p.argmax(axis=1) == np.asarray(y)
    return {"threshold": float(threshold), "coverage": float(keep.mean()),
            "accepted_accuracy": float(correct[keep].mean()) if keep.any() else None,
            "accepted_and_wrong": float(np.mean(keep & ~correct)) if len(keep) else None,
            "n": int(len(keep))}


@dataclass
class Calibration:
    """What a model carries: its temperature and the recommended abstain threshold (calibrated probs)."""

    temperature: float = 1.0
    abstain_threshold: float = 0.0
    target_accuracy: float = 0.99
    fitted_on: str = ""
    ece_before: float | None = None
    ece_after: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def fit_calibration(val_probs, val_y, shifted_probs=None, shifted_y=None,
                    target_accuracy: float = 0.99) -> Calibration:
    """T on clean val; the abstain threshold on the shifted val (calibrated), else on clean val.

    The target is deliberately strict (99 % of accepted predictions right under the synthetic shift):
    the shifted val is milder than many real labs, and for a clinician-facing tool a wrong confident
    answer costs more than an "unsure" that sends the cell to a human."""
    t = fit_temperature(val_probs, val_y)
    src_p, src_y = (shifted_probs, shifted_y) if shifted_probs is not None else (val_probs, val_y)
    thr = choose_threshold(apply_temperature(src_p, t), src_y, target_accuracy)
    return Calibration(temperature=round(t, 4), abstain_threshold=round(thr, 4), target_accuracy=target_accuracy,
                       fitted_on="temperature: val split (NLL); threshold: " +
                                 ("shifted val" if shifted_probs is not None else "val split") +
                                 f", lowest confidence with >= {target_accuracy:.0%} accepted accuracy",
                       ece_before=round(expected_calibration_error(val_probs, val_y), 5),
                       ece_after=round(expected_calibration_error(apply_temperature(val_probs, t), val_y), 5))
