"""The bench gate: which variants lose too much accuracy or agree too little with the reference.

The rule is export's (`wbc_edge.metrics.gate_reasons`), applied to every non-reference variant on the bench
images and, with `--domain`, to the agreement on every other lab's folder (`wbc_edge.bench.crossdomain`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["gate_failures", "gate_record"]


def gate_failures(result: dict) -> list[dict]:
    """[{variant, reason, delta_accuracy_pp, agreement_pct}] for each non-reference variant over the gate."""
    from ..metrics import gate_reasons

    cfg = result.get("config", {})
    out = []
    for v in result.get("variants", []):
        p = v.get("parity")
        if v.get("is_reference") or not p:
            continue
        reasons = gate_reasons(p["delta_accuracy_pp"], p["agreement_pct"], max_drop_pp=cfg.get("max_accuracy_drop"),
                               min_agreement_pct=cfg.get("min_agreement"))
        if reasons:
            reason = (f"{'; '.join(reasons)} ({p['accuracy']:.2%} vs reference {p['reference_accuracy']:.2%}; "
                      f"{p['n_disagreements']} of {p['n']} images differ)")
            out.append({"variant": v["name"], "reason": reason,
                        "delta_accuracy_pp": p["delta_accuracy_pp"], "agreement_pct": p["agreement_pct"]})
    for f in ((result.get("domains") or {}).get("gate") or {}).get("failures", []):
        out.append({"variant": Path(f["model"]).name, "reason": f"on {f['domain']}: {f['reason']}",
                    "delta_accuracy_pp": None, "agreement_pct": None})
    return out


def gate_record(result: dict) -> dict:
    """result["gate"]: the thresholds, whether any was set, passed, and the failures."""
    cfg = result.get("config", {})
    fails = gate_failures(result)
    drop, agree = cfg.get("max_accuracy_drop"), cfg.get("min_agreement")
    return {"max_accuracy_drop_pp": drop, "min_agreement_pct": agree,
            "checked": drop is not None or agree is not None, "passed": not fails, "failures": fails}
