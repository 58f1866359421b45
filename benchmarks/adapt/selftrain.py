"""Self-training probe for the learning curve's pbc_st / pbc_stt / imagenet_st arms (not a feature).

Why it was tried: a lab labels 5-20 cells per class but has hundreds unlabelled.  One round of pseudo-labelling
(Lee 2013; "noisy student", Xie et al. 2020): the adapted model (the teacher) labels the unlabelled images it is
sure of - the argmax of its softmax averaged over the image's cached views (clean + augmented), kept when that
average reaches 0.9 (fixed before any run) - and adapting re-runs from the source model with those added, on
their augmented views.  Measured on 2026-12-02 (benchmarks/adapt/README.md, "Tried and not adopted"): the
pseudo labels were ~99 % right, but the student was no better than the teacher, so `wbc-edge adapt` has no
such option.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wbc_edge.adapt import ActSet, SplitNet, predict_top

#: Pseudo-label threshold on the view-averaged softmax (fixed before the first run).
THRESHOLD = 0.9


@dataclass
class PseudoLabels:
    """Which pool images the teacher labelled, as what, and how sure it was (mean over views)."""

    index: np.ndarray       # into the pool, int64
    labels: np.ndarray      # class index per kept image, int64
    confidence: np.ndarray  # of every pool image (the view-averaged max probability)
    threshold: float
    per_class: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"pool": int(len(self.confidence)), "kept": int(len(self.index)), "threshold": self.threshold,
                "per_class": self.per_class}


def pseudo_label(net: SplitNet, pool_views: list, threshold: float, class_names) -> PseudoLabels:
    """The teacher (net as it is now) on every view of every pool image; keep view-averaged confidence >= threshold."""
    probs = np.mean([predict_top(net, v) for v in pool_views], axis=0)
    conf = probs.max(1).astype(np.float32)
    keep = np.flatnonzero(conf >= threshold).astype(np.int64)
    cls = probs.argmax(1)[keep].astype(np.int64)
    return PseudoLabels(keep, cls, conf, float(threshold),
                        {c: int(np.sum(cls == i)) for i, c in enumerate(class_names)})


def with_pseudo(local: ActSet, pool_views: list, pseudo: PseudoLabels) -> ActSet:
    """The labelled local images followed by the kept pool images (every view), labelled as the teacher said."""
    views = [np.concatenate([lv, pv[pseudo.index].astype(lv.dtype)])
             for lv, pv in zip(local.views, pool_views, strict=True)]
    return ActSet(views, np.concatenate([local.labels, pseudo.labels]))
