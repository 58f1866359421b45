"""A model's scores on one labelled set as files: metrics.json, confusion.json and confusion.png."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..core.atomic import write_json
from .classification import Metrics
from .plots import matplotlib_available, plot_confusion

log = logging.getLogger(__name__)


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
        plot = matplotlib_available()
        if not plot:
            log.warning("matplotlib not installed: %sconfusion.png not written", prefix)
    if plot:
        paths["confusion_png"] = plot_confusion(np.asarray(metrics.confusion), metrics.labels,
                                                out / f"{prefix}confusion.png", title=title)
    return paths

__all__ = ["save_metrics"]
