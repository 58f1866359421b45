"""Classification metrics in numpy: the one implementation used for the Keras model, every TFLite variant
and the benchmark harness, so that numbers from different stages are comparable by construction.

TensorFlow-free.  matplotlib is imported only inside the plotting functions (a runtime-only install on a
Raspberry Pi has none); `save_metrics` then skips the PNG unless asked to insist on it.

Conventions (the same as scikit-learn's defaults, so numbers can be cross-checked there):
- class indices are positions in `labels` (normally `CLASSES`); confusion rows = true, columns = predicted;
- precision / recall / F1 of a class are 0, not NaN, when undefined (0/0: a class never predicted has
  precision 0, a class absent from `y_true` has recall 0) - JSON stays plain and a table never shows NaN;
- balanced accuracy = mean recall over the classes that occur in `y_true` (a recall is undefined without
  true samples, and counting it as 0 would punish the model for the test set's composition);
- macro-F1 = mean F1 over the classes that occur in `y_true` OR in `y_pred`: a class the model predicts but
  that never occurs has F1 0 and is counted (spurious predictions are penalised), while a class absent
  from both has nothing to score and is left out rather than averaged in as a free 0 or a free 1.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, write_json
from .classes import CLASSES
from .errors import WbcEdgeError

log = logging.getLogger(__name__)

MATPLOTLIB_MISSING = "plots need matplotlib: pip install 'wbc-edge[train]'"
CI_LEVEL = 0.95


# --------------------------------------------------------------------------------------------- validation


def _as_indices(name: str, values: Any) -> np.ndarray:
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
    t = _as_indices("y_true", y_true)
    p = _as_indices("y_pred", y_pred)
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
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    n = int(c.size)
    rng = np.random.default_rng(seed)
    acc = rng.binomial(n, float(c.mean()), size=int(n_boot)) / n
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(acc, [alpha, 1.0 - alpha])
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
    labels: list[str] = field(default_factory=lambda: list(CLASSES))

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


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def compute_metrics(y_true: Any, y_pred: Any, labels: Sequence[str] = CLASSES, *, bootstrap: int = 1000,
                    seed: int = 0) -> Metrics:
    """Accuracy (+ bootstrap 95% CI), balanced accuracy, macro-F1, per-class P/R/F1 and the confusion matrix.

    `y_true`, `y_pred`: 1-D integer arrays of class indices into `labels`.  Undefined precision / recall /
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
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2.0 * precision * recall, precision + recall)

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


# ------------------------------------------------------------------------------------------ parity checks


def agreement(pred_a: Any, pred_b: Any) -> float:
    """Fraction of samples on which two models' top-1 predictions (1-D class-index arrays) agree."""
    a = _as_indices("pred_a", pred_a)
    b = _as_indices("pred_b", pred_b)
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


# -------------------------------------------------------------------------------------------------- plots


def parity(probs: Any, ref_probs: Any, y_true: Any, labels: Sequence[str] = CLASSES
           ) -> tuple[dict, Metrics, Metrics]:
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


def gate_reasons(delta_accuracy_pp: float, agreement_pct: float, *, max_drop_pp: float | None = None,
                 min_agreement_pct: float | None = None) -> list[str]:
    """Why a variant fails its parity gate (empty list = passes); None disables a limit."""
    reasons = []
    if max_drop_pp is not None and -delta_accuracy_pp > float(max_drop_pp) + 1e-9:
        reasons.append(f"accuracy drop {-delta_accuracy_pp:.2f} pp > {float(max_drop_pp):g} pp")
    if min_agreement_pct is not None and agreement_pct < float(min_agreement_pct) - 1e-9:
        reasons.append(f"top-1 agreement {agreement_pct:.2f}% < {float(min_agreement_pct):g}%")
    return reasons


def _pyplot():
    """Import pyplot on the Agg backend, or raise WbcEdgeError if matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise WbcEdgeError(MATPLOTLIB_MISSING) from None
    # Headless and deterministic.  If the host process already imported pyplot (a notebook), leave its
    # backend alone: switching would close the host's open figures; savefig works on any backend.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    try:
        return importlib.import_module("matplotlib.pyplot")
    except ImportError:
        raise WbcEdgeError(MATPLOTLIB_MISSING) from None


def _matplotlib_available() -> bool:
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def plot_confusion(cm: Any, labels: Sequence[str], path: str | os.PathLike, title: str | None = None,
                   normalize: bool = True) -> Path:
    """Write a confusion-matrix PNG (rows = true, columns = predicted) atomically to `path`; return it.

    Each cell shows the count and the row-normalised percentage (share of that true class).  `normalize`
    chooses what the colours and colour bar show: row percentages (default; readable with imbalanced
    classes) or raw counts.
    """
    cm = np.asarray(cm)
    labels = [str(x) for x in labels]
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise ValueError(f"cm must be square and match {len(labels)} labels, got shape {cm.shape}")
    plt = _pyplot()
    counts = cm.astype(np.int64)
    row = counts.sum(axis=1, keepdims=True)
    pct = _safe_div(counts * 100.0, np.broadcast_to(row, counts.shape))
    shown = pct if normalize else counts.astype(np.float64)
    vmax = 100.0 if normalize else max(1.0, float(shown.max()))

    c = len(labels)
    side = max(5.0, 1.1 * c + 2.5)
    fig, ax = plt.subplots(figsize=(side + 1.0, side), dpi=150)
    try:
        im = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
        cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        cbar.set_label("% of true class" if normalize else "count")
        font = 10 if c <= 8 else max(5, 10 - (c - 8) // 2)
        for i in range(c):
            for j in range(c):
                text = f"{counts[i, j]}\n{pct[i, j]:.1f}%" if row[i, 0] else "0\n-"
                color = "white" if shown[i, j] > 0.55 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=font)
        ax.set_xticks(range(c))
        ax.set_yticks(range(c))
        ax.set_xticklabels(labels, rotation=35, ha="right", rotation_mode="anchor")
        ax.set_yticklabels([f"{lab} ({row[i, 0]})" for i, lab in enumerate(labels)])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (support)")
        total = int(counts.sum())
        acc = float(np.trace(counts)) / total if total else 0.0
        ax.set_title((f"{title}\n" if title else "") + f"n={total}, accuracy {acc:.2%}", fontsize=11)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight", pad_inches=0.15)
    finally:
        plt.close(fig)
    return Path(path)


_ACC_KEYS = ("accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy")


def _series(history: Mapping[str, Any], keys: Sequence[str]) -> list[float]:
    """The first of `keys` in `history` holding any value, as floats (None -> NaN, a gap); [] if none."""
    for k in keys:
        values = history.get(k)
        if values is not None and any(v is not None for v in values):
            return [float("nan") if v is None else float(v) for v in values]
    return []


def plot_curves(history: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str | None = None,
                phase_boundaries: Sequence[int] | None = None) -> Path:
    """Write a training-curves PNG (accuracy and loss panels, train vs val per epoch) atomically; return it.

    `history`: Keras-style per-epoch lists (accuracy, val_accuracy, loss, val_loss; missing or all-None
    keys are skipped, a None entry leaves a gap; acc / sparse_categorical_accuracy /
    categorical_accuracy are accepted for accuracy).  `phase_boundaries`: epoch
    counts after which a new training phase began (Keras' `initial_epoch` of that phase, e.g. [5] when
    fine-tuning started after 5 head-training epochs); a dashed line is drawn between epoch b and b+1.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=150)
    try:
        panels = ((axes[0], "accuracy", _ACC_KEYS), (axes[1], "loss", ("loss",)))
        for ax, name, keys in panels:
            drawn = False
            for prefix, style in (("", "-o"), ("val_", "-s")):
                ys = _series(history, [prefix + k for k in keys])
                if not ys:
                    continue
                ax.plot(range(1, len(ys) + 1), ys, style, markersize=3, linewidth=1.5,
                        label="val" if prefix else "train")
                drawn = True
            for b in phase_boundaries or ():
                ax.axvline(int(b) + 0.5, color="grey", linestyle="--", linewidth=1)
            if phase_boundaries:
                ax.plot([], [], color="grey", linestyle="--", linewidth=1, label="phase change")
            if drawn:
                ax.legend(loc="best")
                ax.xaxis.get_major_locator().set_params(integer=True)
            else:
                ax.text(0.5, 0.5, f"no {name} recorded", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.set_title(name)
            ax.grid(True, alpha=0.3)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight", pad_inches=0.15)
    finally:
        plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------- artifacts


def save_metrics(metrics: Metrics, out_dir: str | os.PathLike, prefix: str = "", *,
                 extra: Mapping[str, Any] | None = None, plot: bool | None = None,
                 title: str | None = None) -> dict[str, Path]:
    """Write `{prefix}metrics.json`, `{prefix}confusion.json` and `{prefix}confusion.png` atomically.

    `extra`: more top-level keys for metrics.json (model path, variant, split sha256, ...); a key that
    collides with a metric is allowed only with the same value (e.g. n), otherwise ValueError rather
    than a silent overwrite.  `plot`: None = write the PNG when matplotlib is installed (skipped with a
    log warning on a runtime-only install), True = insist (WbcEdgeError without matplotlib), False = no PNG.
    Returns {"metrics": path, "confusion_json": path[, "confusion_png": path]}.
    """
    out = Path(out_dir)
    data = metrics.to_dict()
    if extra:
        clash = sorted(k for k in set(extra) & set(data) if extra[k] != data[k])
        if clash:
            raise ValueError(f"extra keys would overwrite metrics with other values: {clash}")
        data.update(extra)
    paths: dict[str, Path] = {}
    paths["metrics"] = out / f"{prefix}metrics.json"
    write_json(paths["metrics"], data)
    paths["confusion_json"] = out / f"{prefix}confusion.json"
    write_json(paths["confusion_json"], {"labels": list(metrics.labels), "rows": "true",
                                         "columns": "predicted", "matrix": data["confusion"]})
    if plot is None:
        plot = _matplotlib_available()
        if not plot:
            log.warning("matplotlib not installed: %sconfusion.png not written", prefix)
    if plot:
        paths["confusion_png"] = plot_confusion(np.asarray(metrics.confusion), metrics.labels,
                                                out / f"{prefix}confusion.png", title=title)
    return paths


__all__ = [
    "Metrics",
    "agreement",
    "bootstrap_ci",
    "compute_metrics",
    "confusion_matrix",
    "per_class_recall_delta",
    "plot_confusion",
    "plot_curves",
    "prob_error",
    "save_metrics",
]
