"""The cross-domain report's pictures: balanced accuracy and agreement per domain, and risk-coverage curves.

Kept apart from `wbc_edge.bench.crossdomain` (which computes the report) so that the numbers can be produced and tested
without matplotlib; `wbc-edge crossdomain` draws them from the result dict.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def plot(result: dict, path: str | os.PathLike) -> Path:
    """Balanced accuracy per domain and model (bars) and, for .tflite files, agreement (second panel)."""
    from ..metrics import pyplot

    plt = pyplot()
    domains = [d["name"] for d in result["domains"]]
    models = result["models"]
    agree_models = [m for m in models if any("agreement_pct" in d["results"][m] for d in result["domains"])]
    fig, axes = plt.subplots(1, 2 if agree_models else 1, figsize=(12 if agree_models else 7, 4.2), squeeze=False)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(domains))
    ax = axes[0][0]
    for i, m in enumerate(models):
        vals = [100 * d["results"][m]["balanced_accuracy"] for d in result["domains"]]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=Path(m).name)
    ax.set_xticks(x, domains, rotation=15)
    ax.set_ylim(0, 100)
    ax.set_ylabel("balanced accuracy %")
    ax.set_title("Accuracy per domain")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    if agree_models:
        ax = axes[0][1]
        w = 0.8 / len(agree_models)
        for i, m in enumerate(agree_models):
            vals = [d["results"][m].get("agreement_pct", np.nan) for d in result["domains"]]
            ax.bar(x + i * w - 0.4 + w / 2, vals, w, label=Path(m).name)
        lo = min([d["results"][m].get("agreement_pct", 100) for d in result["domains"] for m in agree_models])
        ax.set_ylim(max(0.0, min(lo - 2, 95.0)), 100.5)
        ax.set_xticks(x, domains, rotation=15)
        ax.set_ylabel("top-1 agreement with reference %")
        ax.set_title(f"Agreement with {Path(result['reference']).name}")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_risk_coverage(result: dict, path: str | os.PathLike, model: str | None = None) -> Path:
    """Accuracy of the accepted images vs the fraction accepted, one curve per domain (one model)."""
    from ..metrics import pyplot

    plt = pyplot()
    model = model or result["models"][0]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for d in result["domains"]:
        c = d["results"][model]["confidence"]
        rc, at = c["risk_coverage"], c["at_threshold"]
        line, = ax.plot([100 * x for x in rc["coverage"]], [100 * x for x in rc["accuracy"]], label=d["name"])
        if at["accepted_accuracy"] is not None:
            ax.plot([100 * at["coverage"]], [100 * at["accepted_accuracy"]], "o", color=line.get_color())
    ax.set_xlabel("coverage: % of images accepted (most confident first)")
    ax.set_ylabel("accuracy of accepted images %")
    ax.set_title(f"Risk-coverage, {Path(model).name} (dots: stored threshold)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def _save(plt, fig, path: str | os.PathLike) -> Path:
    """Lay out, write atomically (temp file + rename) and close the figure."""
    from ..core.atomic import atomic_path

    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
