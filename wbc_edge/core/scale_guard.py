"""The scale guard: zoom in on a cell that is much smaller in the frame than the training cells were.

Why: the robust recipe trains zooms of 0.8-2.8x, so a model tolerates cells *larger* than PBC's (Tecom's
tight crops) but not much smaller ones - a lab imaging at lower magnification.  On the leak-free PBC test
split zoomed out about its centre, the shipped model falls from 98.7 % balanced accuracy to 75.6 % at 0.5x
and 49.0 % at 0.35x (benchmarks/robust/probes/small_cell_shipped.md).  Training with a wider zoom range fixed
that but cost Tecom and CellaVision (benchmarks/robust/README.md, "Tried and not adopted", item 6).  The guard
works at inference instead, and in one direction only:

- it measures the stained nucleus (dark and blue-purple) of the preprocessed image;
- when the nucleus is smaller than almost every training nucleus (`threshold`: a low quantile of the
  training split's nucleus fractions), it magnifies about the nucleus so that it reaches the training
  median (`target`), at most `max_zoom` (inside the 2.8x the recipe trains on);
- otherwise the pixels pass unchanged.  By construction it leaves all but the lowest quantile of training
  images alone, and the rare false trigger only magnifies - the direction the model is trained to tolerate.

A per-image normaliser in both directions was tried and hurt (the nucleus mask is stain-dependent; zooming
Tecom's cells *out* lost 12 pp); this guard never zooms out.  The parameters are fitted per run on its train
split (`wbc_edge.calibrate.confidence.fit_run_scale_guard`, RUN_DIR/scale_guard.json), copied into every exported
contract, and applied by the runtime (`Classifier.preprocess`) and by `wbc-edge crossdomain` to every model
it scores, the Keras reference included - one function, so the pixels stay identical across them.

numpy + Pillow only: the runtime imports this on a Raspberry Pi.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = ["ScaleGuard", "SCALE_GUARD_FILE", "nucleus", "nucleus_fraction", "fit_scale_guard",
           "guard_pixels", "guard_batch"]

SCALE_GUARD_FILE = "scale_guard.json"
METHOD = "nucleus-1"  # the measurement below; a change to it must change this name
_BORDER = 0.05        # border strip (fraction of the side) whose median is the background
_INNER = 0.25         # radius (fraction of the side) in which the nucleus' colour is sampled
_OUTER = 0.45         # the nucleus is searched within this radius of the centre
_PEAK = 99            # percentile of the stain score near the centre taken as the nucleus' colour: a high one, so
#                       that a nucleus covering only ~2 % of the central disc (a cell at 1/3 magnification) counts


@dataclass(frozen=True)
class ScaleGuard:
    """`threshold`, `target`: nucleus equivalent diameter as a fraction of the image side (see `nucleus`)."""

    threshold: float
    target: float
    max_zoom: float = 2.5
    method: str = METHOD

    def __post_init__(self):
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                 for v in (self.threshold, self.target, self.max_zoom))
        if not ok or not 0 < self.threshold <= self.target < 1 or not 1 <= self.max_zoom <= 4:
            raise ValueError(f"scale guard needs 0 < threshold <= target < 1 and 1 <= max_zoom <= 4, got "
                             f"threshold={self.threshold!r}, target={self.target!r}, max_zoom={self.max_zoom!r}")
        if self.method != METHOD:
            raise ValueError(f"unknown scale guard method {self.method!r} (this version knows {METHOD!r})")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> ScaleGuard:
        if not isinstance(raw, dict):
            raise ValueError(f"scale guard must be an object, got {type(raw).__name__}")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"scale guard has unknown fields {sorted(unknown)}")
        return cls(**raw)

    def zoom_for(self, fraction: float | None) -> float:
        """The magnification for an image whose nucleus fraction is `fraction` (1.0: leave it alone)."""
        if fraction is None or fraction >= self.threshold:
            return 1.0
        return float(min(self.max_zoom, self.target / max(fraction, 1e-6)))


def nucleus(pixels: np.ndarray) -> tuple[float, float, float] | None:
    """(x, y, equivalent diameter) in pixels of the stained nucleus of uint8 RGB (H, W, 3), or None.

    Stain score (B - G) + (255 - G) / 2: nuclei are dark (low green) and blue-purple.  A pixel is nucleus
    when its score is above the midpoint between the border's median (background) and the 99th percentile
    near the centre, within 0.45 of the side from the centre.
    """
    a = np.asarray(pixels, dtype=np.float32)
    score = (a[..., 2] - a[..., 1]) + 0.5 * (255.0 - a[..., 1])
    h, w = score.shape
    border = _border(score)
    cx, cy, inner, outer = _grid(h, w)
    bg, fg = float(np.median(border)), float(np.percentile(score[inner], _PEAK))
    mask = (score > bg + 0.5 * (fg - bg)) & outer
    if fg <= bg or mask.sum() < 10:
        return None
    return float(cx[mask].mean()), float(cy[mask].mean()), float(2 * np.sqrt(mask.sum() / np.pi))


@lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel x, y and the central / search discs of an h x w image (one image size per model: cached)."""
    cy, cx = np.mgrid[0:h, 0:w]
    r = np.hypot((cy - h / 2) / h, (cx - w / 2) / w)
    return cx, cy, r < _INNER, r < _OUTER


def nucleus_fraction(pixels: np.ndarray) -> float | None:
    """The nucleus' equivalent diameter as a fraction of the image side (None: no nucleus found)."""
    found = nucleus(pixels)
    return None if found is None else found[2] / min(np.shape(pixels)[:2])


def fit_scale_guard(pixels, quantile: float = 0.005, max_zoom: float = 2.5) -> ScaleGuard:
    """A guard from training images (iterable of uint8 (S, S, 3)): threshold = their `quantile` nucleus
    fraction, target = the median."""
    fracs = np.array([f for f in (nucleus_fraction(p) for p in pixels) if f is not None], dtype=np.float64)
    if len(fracs) < 20:
        raise ValueError(f"a scale guard needs >= 20 images with a detectable nucleus, got {len(fracs)}")
    return ScaleGuard(threshold=round(float(np.quantile(fracs, quantile)), 4),
                      target=round(float(np.median(fracs)), 4), max_zoom=float(max_zoom))


def guard_pixels(pixels: np.ndarray, guard: ScaleGuard | None) -> tuple[np.ndarray, float]:
    """uint8 (S, S, 3) -> (the pixels the model is fed, the zoom applied; 1.0 = unchanged, same array)."""
    if guard is None:
        return pixels, 1.0
    found = nucleus(pixels)
    zoom = guard.zoom_for(None if found is None else found[2] / min(pixels.shape[:2]))
    if zoom == 1.0:
        return pixels, 1.0
    return _magnify(pixels, zoom, found[0], found[1]), zoom


def guard_batch(pixels: np.ndarray, guard: ScaleGuard | None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, S, S, 3) -> (guarded copy, or the input itself when nothing changed; zoom per image)."""
    zooms = np.ones(len(pixels), dtype=np.float32)
    if guard is None:
        return pixels, zooms
    out = pixels
    for i in range(len(pixels)):
        px, zooms[i] = guard_pixels(pixels[i], guard)
        if zooms[i] != 1.0:
            if out is pixels:
                out = pixels.copy()
            out[i] = px
    return out, zooms


def _magnify(pixels: np.ndarray, zoom: float, x: float, y: float) -> np.ndarray:
    """Magnify by `zoom` about (x, y); what falls outside the image takes the border's median colour."""
    h, w = pixels.shape[:2]
    fill = tuple(int(v) for v in np.median(_border(pixels), axis=0))
    inv = 1.0 / zoom
    data = (inv, 0.0, x - inv * w / 2, 0.0, inv, y - inv * h / 2)
    im = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).transform(
        (w, h), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    return np.asarray(im, dtype=np.uint8)


def _border(a: np.ndarray) -> np.ndarray:
    """The values of the outer strip (`_BORDER` of the side) of an (H, W[, C]) array, one row per pixel."""
    h, w = a.shape[:2]
    bw = max(1, round(_BORDER * min(h, w)))
    tail = a.shape[2:]
    return np.concatenate([a[:bw].reshape(-1, *tail), a[-bw:].reshape(-1, *tail),
                           a[:, :bw].reshape(-1, *tail), a[:, -bw:].reshape(-1, *tail)])
