"""Train-time augmentation on uint8 pixels (numpy only), the single implementation used by every training mode.

WBC crops have no canonical orientation, so the 8 dihedral transforms (flips + 90 degree rotations) are free
label-preserving data; a mild colour/stain jitter covers lab-to-lab staining differences.  Augmentation is
applied to the output of `preprocess` and only ever at train time - never in calibration or evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    dihedral: bool = True
    brightness: float = 0.10   # multiplicative, +-10 %
    contrast: float = 0.10     # around the image mean, +-10 %
    saturation: float = 0.10   # towards/away from grey, +-10 %
    stain: float = 0.05        # independent per-channel gain, +-5 % (stain hue shift)


def augment(pixels: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """uint8 (H, W, 3) -> augmented uint8 (H, W, 3); deterministic for a given rng state."""
    x = pixels
    if cfg.dihedral:
        k = int(rng.integers(8))
        x = np.rot90(x, k % 4, axes=(0, 1))
        if k >= 4:
            x = x[:, ::-1]
    f = x.astype(np.float32)
    if cfg.brightness:
        f *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast:
        mean = f.mean()
        f = (f - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    if cfg.saturation:
        grey = f.mean(axis=2, keepdims=True)
        f = (f - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + grey
    if cfg.stain:
        f *= rng.uniform(1 - cfg.stain, 1 + cfg.stain, size=3).astype(np.float32)
    return np.ascontiguousarray(np.clip(np.rint(f), 0, 255).astype(np.uint8))
