"""Plots of metrics and training: the confusion-matrix PNG and the training curves, written atomically.

matplotlib is imported only inside these functions (a runtime-only install on a Raspberry Pi has none);
`pyplot()` is the one place that imports it (Agg backend, headless) and turns its absence into a one-line
WbcEdgeError.  Other stages that draw (the benchmark, the cross-domain report) use `pyplot()` too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import atomic_path
from ..core.errors import WbcEdgeError
from .classification import safe_div

MATPLOTLIB_MISSING = "plots need matplotlib: pip install 'wbc-edge[train]'"


def pyplot():
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


def matplotlib_available() -> bool:
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
    plt = pyplot()
    counts = cm.astype(np.int64)
    row = counts.sum(axis=1, keepdims=True)
    pct = safe_div(counts * 100.0, np.broadcast_to(row, counts.shape))
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
        return save_png(fig, path)
    finally:
        plt.close(fig)


def save_png(fig, path: str | os.PathLike) -> Path:
    """Write a figure as PNG atomically (one place for the dpi/margins every project plot uses)."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight", pad_inches=0.15)
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
    plt = pyplot()
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
        return save_png(fig, path)
    finally:
        plt.close(fig)

__all__ = ["MATPLOTLIB_MISSING", "matplotlib_available", "plot_confusion", "plot_curves", "pyplot", "save_png"]
