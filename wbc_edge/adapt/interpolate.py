"""Weight interpolation after adapting (WiSE-FT): keep the new lab's gains, give back what the source lost.

Why: fine-tuning on a few local images always costs some source-domain accuracy, even with replay (0.3-0.6 pp
on PBC test in benchmarks/adapt/).  Averaging the weights of the source and the adapted model, theta =
(1 - alpha) * theta_source + alpha * theta_adapted (Wortsman et al. 2022, "Robust fine-tuning of zero-shot
models"), moves back towards the source with little loss on the new lab, because both models sit in one
basin (same start, small steps).  alpha is chosen from source images only - a sample of the source run's
*val* split - so nothing held out of the local folder steers it: the largest alpha whose source accuracy
stays within `max_source_drop` of the source model's.  The local folder then pays for the source's safety
only as much as needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .network import SplitNet, predict_top


def interpolate_weights(source: list, adapted: list, alpha: float) -> list:
    """(1 - alpha) * source + alpha * adapted, tensor by tensor (alpha = 1: the adapted model).

    Written as source + alpha * (adapted - source) so that a tensor adapting did not change (the frozen bottom,
    BatchNorm statistics) comes back bit for bit, not rounded by the mix."""
    if len(source) != len(adapted):
        raise ValueError(f"weight lists differ in length ({len(source)} vs {len(adapted)})")
    return [(s if alpha == 0 else a if alpha == 1 else (s + alpha * (a - s)).astype(s.dtype))
            for s, a in zip(source, adapted, strict=True)]


@dataclass
class AlphaChoice:
    """The chosen alpha and the source accuracy behind it (written to run.json as `interpolation`)."""

    alpha: float
    source_accuracy: float                          # the source model on the check images
    max_source_drop: float
    images: int
    accuracy_by_alpha: dict = field(default_factory=dict)  # "1.0" -> accuracy of that mix
    rule: str = ("largest alpha whose accuracy on source val images is >= the source model's - max_source_drop "
                 "(smallest alpha of the grid if none)")

    def to_dict(self) -> dict:
        return asdict(self)


def choose_alpha(net: SplitNet, source_weights: list, adapted_weights: list, check_acts: np.ndarray,
                 check_y: np.ndarray, alphas=(1.0, 0.9, 0.8, 0.7, 0.6, 0.5),
                 max_source_drop: float = 0.002) -> AlphaChoice:
    """Pick alpha on source images (see module docstring); leaves net.model at the chosen mix."""
    check_y = np.asarray(check_y)
    if len(check_y) == 0:
        raise ValueError("no source images to choose the interpolation on")

    def accuracy(weights) -> float:
        net.model.set_weights(weights)
        return float(np.mean(predict_top(net, check_acts).argmax(1) == check_y))

    src = accuracy(source_weights)
    grid = sorted({float(a) for a in alphas}, reverse=True)
    by_alpha: dict[str, float] = {}
    chosen = grid[-1]
    for a in grid:  # from the adapted model back towards the source: the first that is safe enough
        by_alpha[f"{a:g}"] = accuracy(interpolate_weights(source_weights, adapted_weights, a))
        if by_alpha[f"{a:g}"] >= src - max_source_drop - 1e-12:
            chosen = a
            break
    net.model.set_weights(interpolate_weights(source_weights, adapted_weights, chosen))
    return AlphaChoice(alpha=chosen, source_accuracy=src, max_source_drop=max_source_drop, images=int(len(check_y)),
                       accuracy_by_alpha=by_alpha)
