"""The images a run trains, selects and is scored on: the manifest's splits as (paths, class indices), checked
up front, plus the per-image pixels and the class weights the trainers feed.

Why up front: a manifest paired with the wrong data folder, or a split that lacks a class, must fail before
hours of training, not in the final scoring step.
"""

from __future__ import annotations

import numpy as np

from ..data.augment import AugmentConfig, augment
from ..data import SplitManifest, per_class_indices, require_all_classes
from ..core.errors import DatasetError
from ..core.labels import Labels
from ..core.preprocess import preprocess
from .config import TrainConfig

#: Splits a run reads (all three: train to fit, val to select and calibrate, test to score).
SPLITS = ("train", "val", "test")

Split = tuple[list[str], np.ndarray]


def load_splits(manifest: SplitManifest, cfg: TrainConfig, labels: Labels, where: str) -> dict[str, Split]:
    """{split: (absolute paths, int64 class indices in `labels` order)}, capped by `cfg.limit_per_class`
    (the first images of each class in manifest order); DatasetError naming `where` for an empty split or a
    missing class."""
    manifest.verify(cfg.data_root)  # the manifest must match DATA before hours of training, not mid-way
    data: dict[str, Split] = {}
    for split in SPLITS:
        paths, y = manifest.files(split, cfg.data_root, labels=labels)
        y = np.asarray(y, dtype=np.int64)
        keep = per_class_indices(y, cfg.limit_per_class)
        paths, y = [str(paths[i]) for i in keep], y[keep]
        if len(paths) == 0:
            raise DatasetError(f"{where}: split '{split}' is empty")
        require_all_classes(y, f"{where}: split '{split}'",
                            "to train" if split == "train" else "to select and score the model", labels=labels)
        data[split] = (paths, y)
    return data


def class_weights(y: np.ndarray, num_classes: int) -> dict[int, float]:
    """Loss weight per class, inversely proportional to its frequency (mean 1 over the present classes)."""
    counts = np.bincount(y, minlength=num_classes).astype(float)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return {i: float(w[i]) for i in range(num_classes)}


def load_pixels(path: str, size: int, rng: np.random.Generator | None, aug: AugmentConfig) -> np.ndarray:
    """uint8 pixels of one image on the one preprocessing path, augmented when an rng is given."""
    px = preprocess(path, size)
    return augment(px, rng, aug) if rng is not None else px


def source_ids(paths: list[str], cfg: TrainConfig) -> np.ndarray | None:
    """Which source lab each image is from (int64 index into cfg.sources), None for a one-lab run: a
    multi-source manifest path is SOURCE/class/file under cfg.data_root (`wbc_edge.data.sources`)."""
    if not cfg.sources:
        return None
    import os

    names = [s["name"] for s in cfg.sources]
    root = os.path.abspath(cfg.data_root)
    first = [os.path.relpath(os.path.abspath(p), root).replace(os.sep, "/").split("/", 1)[0] for p in paths]
    unknown = sorted(set(first) - set(names))
    if unknown:
        raise DatasetError(f"{cfg.data_root}: images outside the run's sources ({', '.join(unknown)})")
    return np.array([names.index(f) for f in first], dtype=np.int64)


def sample_weights(y: np.ndarray, num_classes: int, sources: np.ndarray | None, *, classes: bool = True,
                   domains: bool = True) -> dict[int, float] | np.ndarray | None:
    """The loss weights of the training images: per class ({class: weight}, as before) for one lab; for
    several labs per image (mean 1), so that every lab weighs the same and, within a lab, every class present.

    Why per lab: 250 cells of a second lab among 7,000 of the first would otherwise move the loss by 3 %; the
    model would learn the first lab's look and treat the second as noise (issue 31)."""
    if sources is None or not domains or len(np.unique(sources)) < 2:
        return class_weights(y, num_classes) if classes else None
    w = np.zeros(len(y), dtype=np.float64)
    labs = np.unique(sources)
    for s in labs:
        in_lab = sources == s
        present = np.unique(y[in_lab])
        for c in present if classes else [None]:
            sel = in_lab & (y == c) if c is not None else in_lab
            w[sel] = 1.0 / (len(labs) * (len(present) if classes else 1) * sel.sum())
    return (w * len(y)).astype(np.float32)  # mean 1


def within_lab_weights(y: np.ndarray, sources: np.ndarray, *, classes: bool = True) -> np.ndarray:
    """Per-image loss weights when batches already hold an equal share of each lab (`--lab-batches`): classes
    balanced within each lab, mean 1 within each lab - the labs' balance comes from the sampling, so weighting
    them again would count the small lab twice."""
    w = np.ones(len(y), dtype=np.float64)
    for s in np.unique(sources):
        in_lab = sources == s
        if classes:
            present = np.unique(y[in_lab])
            for c in present:
                sel = in_lab & (y == c)
                w[sel] = in_lab.sum() / (len(present) * sel.sum())
    return w.astype(np.float32)
