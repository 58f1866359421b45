"""One image's result as the runtime returns it: the label, its (calibrated) probability and the rest.

Kept apart from the classifier so that code which only reads or prints predictions (the CLI, an app) does
not need to know how they were computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Prediction", "make_prediction"]


@dataclass(frozen=True)
class Prediction:
    """One image's result.  `probabilities` is float32, one per label, in label order - calibrated by the
    model's temperature when it carries one.  `uncertain`: the confidence is below the abstain threshold
    (the model's recommended one, or the caller's `min_confidence`): show "unsure", not the label.
    `zoom`: how much the scale guard magnified the image before inference (1.0: not at all).
    `fallback`: the answer is the cascade's float file's (the quantised file's margin was low)."""

    label: str
    index: int
    probabilities: np.ndarray = field(repr=False)
    confidence: float
    labels: tuple[str, ...] = field(repr=False)
    uncertain: bool = False
    zoom: float = 1.0
    fallback: bool = False

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most probable (label, probability), highest first; ties keep label order."""
        order = np.argsort(-self.probabilities, kind="stable")[: max(0, int(k))]
        return [(self.labels[i], float(self.probabilities[i])) for i in order]

    def to_dict(self, k: int = 3) -> dict:
        return {"label": self.label, "index": self.index, "confidence": self.confidence,
                "uncertain": self.uncertain, "zoom": round(float(self.zoom), 3), "fallback": self.fallback,
                "top_k": [{"label": lab, "probability": p} for lab, p in self.top_k(k)],
                "probabilities": {lab: float(self.probabilities[i]) for i, lab in enumerate(self.labels)}}


def make_prediction(probs: np.ndarray, labels: tuple[str, ...], threshold: float = 0.0,
                    zoom: float = 1.0, fallback: bool = False) -> Prediction:
    """A Prediction from one image's (calibrated) probabilities; uncertain when the top one is < threshold."""
    idx = int(np.argmax(probs))  # first maximum: the same tie rule as top_k's stable sort
    return Prediction(label=labels[idx], index=idx, probabilities=probs, confidence=float(probs[idx]),
                      labels=labels, uncertain=bool(probs[idx] < threshold), zoom=float(zoom),
                      fallback=bool(fallback))
