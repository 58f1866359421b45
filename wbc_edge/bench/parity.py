"""A variant's accuracy parity with the reference on the bench images: the metrics export's gate uses
(`wbc_edge.metrics.parity`), plus the per-class recall changes and the images where the two disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_DISAGREEMENTS_LISTED", "variant_parity"]

MAX_DISAGREEMENTS_LISTED = 500


def variant_parity(probs: np.ndarray, ref_probs: np.ndarray, y: np.ndarray, labels: Sequence[str],
                   rels: Sequence[str]) -> dict:
    """variant["parity"] of a result: probabilities (N, C) of the variant and the reference, both in
    `labels` order, true class indices `y`, image paths `rels` (for the disagreement list)."""
    from ..metrics import parity, per_class_recall_delta

    labels = list(labels)
    summary, met, ref_met = parity(probs, ref_probs, y, labels)
    pred, ref_pred = probs.argmax(1), ref_probs.argmax(1)
    dis = np.nonzero(pred != ref_pred)[0]
    listed = [{"path": rels[i], "true": labels[int(y[i])], "reference_label": labels[int(ref_pred[i])],
               "reference_conf": float(ref_probs[i, ref_pred[i]]), "variant_label": labels[int(pred[i])],
               "variant_conf": float(probs[i, pred[i]])}
              for i in dis[:MAX_DISAGREEMENTS_LISTED]]
    return {**summary,
            "per_class_recall_delta_pp": {k: 100.0 * v for k, v in per_class_recall_delta(met, ref_met).items()},
            "per_class": met.per_class, "confusion": met.confusion,
            "n_disagreements": int(len(dis)), "disagreements": listed}
