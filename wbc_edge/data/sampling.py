"""The one stratified sampler: every subset of labelled images in the package is drawn here.

Users: export's calibration / parity / QAT images and the cross-domain report (`stratified_indices`,
proportional), a quick training run's `--limit-per-class` (`per_class_indices`, a cap per class), the
benchmark's `--limit` (`balanced_indices`, equal shares).  All three rank the images within each class the
same way - input order without a seed, one seeded shuffle per class with one - and differ only in how many
of each class they keep, so a subset is the same on every machine and never drops a rare class (basophils
in a small foreign set) while n allows one of each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_ranks(labels: Sequence[int] | np.ndarray, seed: int | None = None) -> np.ndarray:
    """Each item's rank within its class: its position in input order (seed None), or in a seeded shuffle
    (numpy default_rng(seed), one permutation per class in sorted class order)."""
    labels = np.asarray(labels)
    rank = np.empty(len(labels), dtype=np.int64)
    rng = None if seed is None else np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if rng is not None:
            idx = rng.permutation(idx)
        rank[idx] = np.arange(len(idx))
    return rank


def _proportional_quota(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, images per class): proportional to class size (largest remainder), >= 1 per class when
    n allows, never more than a class has."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / len(labels)
    alloc = np.floor(quota).astype(int)
    if n >= len(classes):
        alloc = np.maximum(alloc, 1)
    alloc = np.minimum(alloc, counts)
    while alloc.sum() < n:
        room = np.where(alloc < counts, quota - alloc, -np.inf)
        alloc[int(np.argmax(room))] += 1
    while alloc.sum() > n:
        alloc[int(np.argmax(np.where(alloc > 1, alloc - quota, -np.inf)))] -= 1
    return classes, alloc


def stratified_indices(labels: Sequence[int] | np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A deterministic stratified sample of `n` indices (sorted); all indices when n is None or >= len.

    Per class, proportional to its share (largest remainder), at least one per class when n allows, the
    first of a seeded shuffle (`class_ranks(labels, seed)`).
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total)
    if n <= 0:
        return np.arange(0)
    classes, alloc = _proportional_quota(labels, int(n))
    rank = class_ranks(labels, seed)
    keep = rank < alloc[np.searchsorted(classes, labels)]
    return np.flatnonzero(keep).astype(np.int64)


def per_class_indices(labels: Sequence[int] | np.ndarray, cap: int | None,
                      seed: int | None = None) -> np.ndarray:
    """At most `cap` indices of each class (sorted): the first in input order (seed None) or of a seeded
    shuffle.  All indices when cap is None."""
    labels = np.asarray(labels)
    if cap is None:
        return np.arange(len(labels))
    return np.flatnonzero(class_ranks(labels, seed) < int(cap)).astype(np.int64)


def balanced_indices(labels: Sequence[int] | np.ndarray, n: int | None,
                     seed: int | None = None) -> np.ndarray:
    """`n` indices (sorted) in equal shares per class as far as the classes allow: round-robin over the
    classes (smallest class index first), each class in input order (seed None) or a seeded shuffle.
    All indices when n is None or >= len."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    order = np.lexsort((labels, class_ranks(labels, seed)))  # by rank within class, then class
    return np.sort(order[:max(int(n), 0)]).astype(np.int64)


__all__ = ["balanced_indices", "class_ranks", "per_class_indices", "stratified_indices"]
