"""Metrics: one numpy implementation for every stage (Keras reference, each TFLite variant, the benchmark).

TensorFlow-free; matplotlib only inside the plotting functions.

- `classification`  compute_metrics -> Metrics (accuracy + bootstrap CI, balanced accuracy, macro-F1,
                    per-class P/R/F1, confusion), confusion_matrix, bootstrap_ci,
                    balanced_accuracy_interval (its posterior: what a few held-out images can tell apart)
- `parity`          a variant against its reference (agreement, probability error, recall deltas) and
                    `gate_reasons`, the one pass/fail rule export and bench apply
- `plots`           confusion-matrix PNG, training curves, `pyplot()` (the lazy matplotlib import)
- `artifacts`       save_metrics: metrics.json + confusion.json + confusion.png

Every function that names classes takes the class list (`labels`) explicitly: it comes from the data.
"""

from .artifacts import save_metrics
from .classification import (
    CI_LEVEL,
    Metrics,
    balanced_accuracy_interval,
    bootstrap_ci,
    check_indices,
    compute_metrics,
    confusion_matrix,
    safe_div,
)
from .parity import accepted_agreement, agreement, gate_reasons, parity, per_class_recall_delta, prob_error
from .plots import MATPLOTLIB_MISSING, matplotlib_available, plot_confusion, plot_curves, pyplot

__all__ = [
    "CI_LEVEL", "MATPLOTLIB_MISSING", "Metrics", "accepted_agreement", "agreement", "balanced_accuracy_interval", "bootstrap_ci", "check_indices", "compute_metrics",
    "confusion_matrix", "gate_reasons", "matplotlib_available", "parity", "per_class_recall_delta",
    "plot_confusion", "plot_curves", "prob_error", "pyplot", "safe_div", "save_metrics",
]
