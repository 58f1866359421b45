"""The one place that knows the class list and its order.

The order is the index order of every model's output vector; changing it silently relabels every model,
so it is frozen here and recorded in every exported file's contract.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")
NUM_CLASSES = len(CLASSES)
CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}


def canonical_class(name: str) -> str | None:
    """Map a folder name to its canonical class (case-insensitive, surrounding space ignored), else None."""
    key = name.strip().lower()
    return key if key in CLASS_INDEX else None
