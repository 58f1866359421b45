"""Reading per-layer error across domains (TF-free): where a foreign domain leaves the calibrated ranges.

The metrics and the ranking themselves are export's (`wbc_edge.export.layer_error`: the int8_mixed variant
ranks with them), re-exported here.
"""

from __future__ import annotations

from ..export.layer_error import ROUNDING_FLOOR, LayerError, by_tensor, parse_statistics, rank, short_name

__all__ = ["ROUNDING_FLOOR", "LayerError", "by_tensor", "parse_statistics", "range_suspects", "rank", "short_name"]


def range_suspects(per_domain: dict[str, list[LayerError]], reference: str, factor: float = 1.5,
                   floor: float = 0.5) -> list[dict]:
    """Layers whose error on a domain is `factor`x their error on the reference set (the calibration
    images) and above `floor` steps: where another domain's activations leave the calibrated ranges
    (clipping) rather than where int8 is merely coarse.  Sorted by the ratio, largest first."""
    ref = by_tensor(per_domain.get(reference, []))
    out = []
    for dom, errs in per_domain.items():
        if dom == reference:
            continue
        for e in errs:
            r = ref.get(e.tensor)
            if r is None or not r.rmse_over_scale > 0:
                continue
            ratio = e.rmse_over_scale / r.rmse_over_scale
            if ratio >= factor and e.rmse_over_scale >= floor:
                out.append({"domain": dom, "layer": e.layer, "tensor": e.tensor, "ratio": round(ratio, 2),
                            "rmse_over_scale": round(e.rmse_over_scale, 3),
                            "reference_rmse_over_scale": round(r.rmse_over_scale, 3)})
    return sorted(out, key=lambda d: -d["ratio"])
