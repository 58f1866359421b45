"""The one stratified sampler: export's calibration/parity subsets, QAT images, the cross-domain report.

Proportional per class (largest remainder), at least one image per class when n allows, seeded - so a
subset is the same on every machine and never drops a rare class (basophils in a small foreign set).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_indices(labels: Sequence[int] | np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A deterministic stratified sample of `n` indices (sorted); all indices when n is None or >= len.

    Per class, proportional to its share (largest remainder), at least one per class when n allows, drawn
    with numpy's default_rng(seed).
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total)
    if n <= 0:
        return np.arange(0)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / total
    alloc = np.floor(quota).astype(int)
    if n >= len(classes):
        alloc = np.maximum(alloc, 1)
    alloc = np.minimum(alloc, counts)
    while alloc.sum() < n:
        room = np.where(alloc < counts, quota - alloc, -np.inf)
        alloc[int(np.argmax(room))] += 1
    while alloc.sum() > n:
        alloc[int(np.argmax(np.where(alloc > 1, alloc - quota, -np.inf)))] -= 1
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    for c, k in zip(classes, alloc, strict=True):
        idx = np.flatnonzero(labels == c)
        picks.extend(rng.permutation(idx)[:k].tolist())
    return np.sort(np.array(picks, dtype=np.int64))
