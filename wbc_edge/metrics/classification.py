"""Classification metrics in numpy: the one implementation used for the Keras model, every TFLite variant
and the benchmark harness, so that numbers from different stages are comparable by construction.

TensorFlow-free and matplotlib-free (plots are in `wbc_edge.metrics.plots`).

Conventions (the same as scikit-learn's defaults, so numbers can be cross-checked there):
- class indices are positions in `labels` (the run's / model's class list, always passed explicitly);
  confusion rows = true, columns = predicted;
- precision / recall / F1 of a class are 0, not NaN, when undefined (0/0: a class never predicted has
  precision 0, a class absent from `y_true` has recall 0) - JSON stays plain and a table never shows NaN;
- balanced accuracy = mean recall over the classes that occur in `y_true` (a recall is undefined without
  true samples, and counting it as 0 would punish the model for the test set's composition);
- macro-F1 = mean F1 over the classes that occur in `y_true` OR in `y_pred`: a class the model predicts but
  that never occurs has F1 0 and is counted (spurious predictions are penalised), while a class absent
  from both has nothing to score and is left out rather than averaged in as a free 0 or a free 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

CI_LEVEL = 0.95


# --------------------------------------------------------------------------------------------- validation


def check_indices(name: str, values: Any) -> np.ndarray:
    """`values` as a non-empty 1-D int64 array of class indices, or a ValueError that says what is wrong."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        hint = " (for probabilities pass probs.argmax(axis=1))" if arr.ndim == 2 else ""
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape {arr.shape}{hint}")
    if arr.size == 0:
        # An empty list becomes float64; say "empty", not "wrong dtype".
        raise ValueError(f"{name} is empty: metrics need at least one sample")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_pair(y_true: Any, y_pred: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    t = check_indices("y_true", y_true)
    p = check_indices("y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = (arr < 0) | (arr >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} has {int(bad.sum())} class index(es) outside 0..{num_classes - 1}, "
                             f"first {int(arr[i])} at position {i}")
    return t, p


# ------------------------------------------------------------------------------------------------ metrics


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """(C, C) int64 counts; entry [i, j] = samples of true class i predicted as class j (rows = true)."""
    num_classes = int(num_classes)
    return _confusion(*_check_pair(y_true, y_pred, num_classes), num_classes)


def _confusion(t: np.ndarray, p: np.ndarray, num_classes: int) -> np.ndarray:
    """confusion_matrix of index arrays already checked by `_check_pair`."""
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def bootstrap_ci(correct: Any, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the accuracy (the mean of `correct`).

    Resampling n items with replacement and counting the correct ones is exactly a Binomial(n, k/n) draw,
    so the `n_boot` resamples are drawn that way: the same bootstrap distribution as index resampling, in
    O(n_boot) time and memory whatever n is.  Deterministic for a given seed.  Like any percentile
    bootstrap it collapses to (1, 1) / (0, 0) when every / no sample is correct.
    """
    c = np.asarray(correct)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"correct must be a non-empty 1-D boolean array, got shape {c.shape}")
    if c.dtype != bool:
        if not np.isin(c, (0, 1)).all():
            raise ValueError("correct must be boolean (or 0/1)")
        c = c.astype(bool)
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n = int(c.size)
    rng = np.random.default_rng(seed)
    return _percentiles(rng.binomial(n, float(c.mean()), size=int(n_boot)) / n, level)


def balanced_accuracy_interval(y_true: Any, y_pred: Any, level: float = 0.95, draws: int = 4000,
                               seed: int = 0) -> tuple[float, float]:
    """Highest-density posterior interval of the balanced accuracy (Brodersen et al. 2010, ICPR), always
    containing the observed balanced accuracy.

    Why: a lab adapting with a few labelled cells scores the result on a few dozen held-out ones, where one
    image moves a class's recall by 10-50 pp; the interval says which differences those images can tell apart
    (benchmarks/adapt/README.md, "What the dev screens can resolve").  Each present class's recall gets the
    Beta(right + 1, wrong + 1) posterior of a flat prior and the balanced accuracy is their mean, sampled
    (`draws`, seeded).  Unlike a bootstrap, a tiny class whose images are all right (or all wrong) still
    widens the interval - 1 of 1 right says little.  Why highest-density, not equal-tailed: with every image
    of a class right the posterior piles up at 1, and an equal-tailed interval then excluded the very score
    it was printed beside ("100.0 (52-97)", issue 30); the shortest interval holding `level` of the draws
    keeps the dense end, and it is stretched to the observed value where sampling left it a hair short.
    """
    t = np.asarray(y_true).ravel()
    p = np.asarray(y_pred).ravel()
    if t.size == 0 or t.shape != p.shape:
        raise ValueError(f"y_true and y_pred must be non-empty and of one length, got {t.shape} and {p.shape}")
    if int(draws) < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    rng = np.random.default_rng(seed)
    recalls, observed = [], []
    for c in np.unique(t):
        sel = t == c
        right = int(np.sum(p[sel] == c))
        recalls.append(rng.beta(right + 1, int(sel.sum()) - right + 1, size=int(draws)))
        observed.append(right / int(sel.sum()))
    lo, hi = _highest_density(np.mean(recalls, axis=0), level)
    point = float(np.mean(observed))
    return min(lo, point), max(hi, point)


def _highest_density(draws: np.ndarray, level: float) -> tuple[float, float]:
    """The shortest interval that holds `level` of the draws."""
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    x = np.sort(np.asarray(draws, dtype=np.float64))
    k = min(len(x), max(1, int(np.ceil(float(level) * len(x)))))
    widths = x[k - 1:] - x[:len(x) - k + 1]
    i = int(np.argmin(widths))
    return float(x[i]), float(x[i + k - 1])


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass
class Metrics:
    """Scores of one model on one labelled set.  All fractions are in 0..1.

    `per_class`: one dict per label, in label order: {label, precision, recall, f1, support}.
    `confusion`: rows = true, columns = predicted, in label order.
    `accuracy_ci95`: percentile-bootstrap 95% interval, or None when computed with bootstrap=0.
    """

    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    n: int
    accuracy_ci95: tuple[float, float] | None
    labels: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (floats, ints, strs, lists, None)."""
        return {
            "accuracy": float(self.accuracy),
            "accuracy_ci95": None if self.accuracy_ci95 is None else [float(x) for x in self.accuracy_ci95],
            "balanced_accuracy": float(self.balanced_accuracy),
            "macro_f1": float(self.macro_f1),
            "n": int(self.n),
            "labels": [str(x) for x in self.labels],
            "per_class": [{"label": str(d["label"]), "precision": float(d["precision"]),
                           "recall": float(d["recall"]), "f1": float(d["f1"]), "support": int(d["support"])}
                          for d in self.per_class],
            "confusion": [[int(v) for v in row] for row in self.confusion],
        }

    def format_table(self) -> str:
        """A multi-line plain-text report: headline scores, per-class table, confusion matrix."""
        if self.accuracy_ci95 is None:
            ci = ""
        else:
            ci = f"  (95% CI {self.accuracy_ci95[0]:.2%} - {self.accuracy_ci95[1]:.2%})"
        lines = [
            f"accuracy           {self.accuracy:.2%}{ci}   n={self.n}",
            f"balanced accuracy  {self.balanced_accuracy:.2%}",
            f"macro-F1           {self.macro_f1:.4f}",
            "",
        ]
        w = max([len("class")] + [len(str(x)) for x in self.labels])
        lines.append(f"{'class':<{w}}  {'precision':>9}  {'recall':>7}  {'f1':>6}  {'support':>7}")
        for d in self.per_class:
            lines.append(f"{d['label']:<{w}}  {d['precision']:>9.2%}  {d['recall']:>7.2%}  "
                         f"{d['f1']:>6.3f}  {d['support']:>7d}")
        lines += ["", "confusion matrix (rows = true, columns = predicted)"]
        cells = [str(v) for row in self.confusion for v in row]
        cw = max([len(str(x)) for x in self.labels] + [len(c) for c in cells])
        lines.append(f"{'':<{w}}  " + " ".join(f"{x!s:>{cw}}" for x in self.labels))
        for i, row in enumerate(self.confusion):
            lines.append(f"{self.labels[i]!s:<{w}}  " + " ".join(f"{int(v):>{cw}d}" for v in row))
        return "\n".join(lines)


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den element-wise, 0 where den is 0 (an undefined precision / recall is 0, never NaN)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def compute_metrics(y_true: Any, y_pred: Any, labels: Iterable[str], *, bootstrap: int = 1000,
                    seed: int = 0) -> Metrics:
    """Accuracy (+ bootstrap 95% CI), balanced accuracy, macro-F1, per-class P/R/F1 and the confusion matrix.

    `y_true`, `y_pred`: 1-D integer arrays of class indices into `labels` (a `wbc_edge.core.labels.Labels` or any
    sequence of names: the run's / model's classes, in output order).  Undefined precision / recall /
    F1 are 0 (see the module docstring for which classes the two macro averages cover).
    `bootstrap`: number of resamples for the CI; 0 skips it (`accuracy_ci95` is then None).
    """
    labels = [str(x) for x in labels]
    if not labels:
        raise ValueError("labels is empty")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels has duplicates: {labels}")
    if int(bootstrap) < 0:
        raise ValueError(f"bootstrap must be >= 0, got {bootstrap}")
    c = len(labels)
    t, p = _check_pair(y_true, y_pred, c)
    cm = _confusion(t, p, c)

    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = safe_div(tp, predicted)
    recall = safe_div(tp, support)
    f1 = safe_div(2.0 * precision * recall, precision + recall)

    in_true = support > 0
    scored = in_true | (predicted > 0)
    correct = t == p
    ci = None if int(bootstrap) == 0 else bootstrap_ci(correct, n_boot=int(bootstrap), seed=seed,
                                                        level=CI_LEVEL)
    return Metrics(
        accuracy=float(correct.mean()),
        balanced_accuracy=float(recall[in_true].mean()),  # y_true non-empty -> at least one class
        macro_f1=float(f1[scored].mean()),
        per_class=[{"label": labels[i], "precision": float(precision[i]), "recall": float(recall[i]),
                    "f1": float(f1[i]), "support": int(support[i])} for i in range(c)],
        confusion=cm.tolist(),
        n=int(t.size),
        accuracy_ci95=ci,
        labels=labels,
    )

__all__ = ["CI_LEVEL", "Metrics", "balanced_accuracy_interval", "bootstrap_ci", "check_indices", "compute_metrics", "confusion_matrix", "safe_div"]
