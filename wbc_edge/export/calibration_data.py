"""The images int8 conversion and QAT learn their ranges from (never the Keras reference or parity pixels).

Calibration: a stratified, seeded sample of the train split through `wbc_edge.core.preprocess` (the training
pixels), a seeded share of it replaced by augmented views (`augment_share`), so the int8 ranges also cover
other labs' pixels.  The first image gets one 0 and one 255 pixel (`calibration_batch`): the calibrator's
min/max of the input is then exactly [0, 255] -> input scale 1.0 / zero point 0 = raw uint8 pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..core.preprocess import preprocess_batch
from ..data.sampling import stratified_indices

PINNED_PIXELS = "image 0: pixel (0,0) = 0, pixel (0,1) = 255 (input range 0..255)"


def augment_share(pixels: np.ndarray, preset_name: str | None, fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """Replace a seeded `fraction` of the images by an augmented view (in place on a copy); returns
    (pixels, how many).  Used for int8 calibration and QAT only - never for the Keras reference or parity."""
    if not preset_name or fraction <= 0 or len(pixels) == 0:
        return pixels, 0
    from ..data.augment import augment, preset

    aug = preset(preset_name)
    out = pixels.copy()
    pick = np.random.default_rng([seed, 77]).permutation(len(pixels))[:int(round(fraction * len(pixels)))]
    for i in pick:
        out[i] = augment(out[i], np.random.default_rng([seed, 78, int(i)]), aug)
    return out, int(len(pick))


def calibration_batch(pixels: np.ndarray, transform: Callable | None = None) -> np.ndarray:
    """float32 copy of the calibration pixels with one 0 and one 255 pixel in the first image.

    The input range of a full-integer model is the min/max the calibrator sees; forcing it to exactly
    [0, 255] gives input scale 1.0 / zero point 0, i.e. the uint8 input takes raw pixels.
    """
    x = pixels.astype(np.float32)
    x[0, 0, 0, :] = 0.0
    x[0, 0, 1, :] = 255.0
    if transform is not None:  # testing hook: simulates a broken calibration pipeline end to end
        x = np.asarray(transform(x), dtype=np.float32)
    return np.ascontiguousarray(x)


def sample_pixels(paths: Sequence[str], labels: np.ndarray, n: int | None, size: int, seed: int, *,
                  augment_preset: str | None, augmented_fraction: float) -> tuple[np.ndarray, np.ndarray, int]:
    """(uint8 pixels, labels, number augmented) of a stratified seeded sample of n images."""
    idx = stratified_indices(labels, n, seed)
    pixels = preprocess_batch([paths[i] for i in idx], size)
    pixels, n_aug = augment_share(pixels, augment_preset, augmented_fraction, seed)
    return pixels, np.asarray(labels)[idx], n_aug


def calibration_info(split: str, labels: np.ndarray, label_names: Sequence[str], seed: int, n_aug: int,
                     preset: str | None, transform: Callable | None) -> dict:
    """The manifest's `calibration` record."""
    return {"split": split, "size": int(len(labels)), "seed": seed,
            "augmented": {"preset": preset, "images": n_aug},
            "per_class": {name: int(np.sum(labels == c)) for c, name in enumerate(label_names)},
            "pinned_pixels": PINNED_PIXELS,
            "transform": None if transform is None else getattr(transform, "__name__", "custom")}
