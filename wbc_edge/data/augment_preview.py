"""A PNG grid of original vs augmented views: people check augmentations by looking, not by reading.

Pillow only (no matplotlib), so it works on any install.  Row = one image (classes taken in turn), column 0 =
the clean `preprocess` output the model is evaluated on, then `views` augmented training views, and - last
column - the held-out "shifted val" view model selection uses.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..core.atomic import atomic_path
from .augment import AugmentConfig, augment, shifted_view
from ..core.errors import DatasetError
from ..core.preprocess import DEFAULT_SIZE


def preview_grid(paths: list[str], labels: list[str], cfg: AugmentConfig, out: str | os.PathLike, *,
                 views: int = 6, size: int = DEFAULT_SIZE, tile: int = 128, seed: int = 0) -> dict:
    """Write the grid to `out`; returns {"images", "views", "ms_per_view"} (the augmentation cost)."""
    from ..core.preprocess import preprocess

    if not paths:
        raise DatasetError("no images to preview")
    header = 18
    grid = Image.new("RGB", ((views + 2) * tile, len(paths) * (tile + header)), "white")
    draw = ImageDraw.Draw(grid)
    spent, n = 0.0, 0
    for r, path in enumerate(paths):
        label = labels[r]
        px = preprocess(path, size)
        cells = [px]
        for v in range(views):
            t = time.perf_counter()
            cells.append(augment(px, np.random.default_rng([seed, v + 1, r]), cfg))
            spent += time.perf_counter() - t
            n += 1
        cells.append(shifted_view(px, np.random.default_rng([seed, 999, r])))
        y = r * (tile + header)
        draw.text((4, y + 3), f"{label}: {Path(path).name}", fill="black")
        draw.text(((views + 1) * tile + 4, y + 3), "shifted val", fill="black")
        for c, cell in enumerate(cells):
            grid.paste(Image.fromarray(cell).resize((tile, tile), Image.Resampling.BILINEAR), (c * tile, y + header))
    with atomic_path(out) as tmp:
        grid.save(tmp, format="PNG")
    return {"images": len(paths), "views": views, "ms_per_view": 1000.0 * spent / max(n, 1)}
