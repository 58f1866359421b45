"""The diagnosis as files: report.json (everything), report.md (for people), layers.png, tradeoff.png.

Written atomically (wbc_edge.core.atomic).  matplotlib is imported only here, inside the plotting functions.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..core import atomic
from .layers import ROUNDING_FLOOR

CALIBRATION = "calibration"
TOP_LAYERS = 12


def _fmt(v, nd=2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _agreement_cell(d: dict | None) -> str:
    if not d:
        return "-"
    return f"{d['agreement_pct']:.2f} ({d['flips']}/{d['n']})"


def markdown(r: dict) -> str:
    doms = [CALIBRATION, *r["domains"]]
    lines = [f"# int8 diagnosis: {r['source_model']['path']}", "",
             f"Tool: {r['tool']}.  Calibration ({r['calibration']['arm']} arm): "
             f"{r['calibration']['description']}.", "",
             "Domains (agreement is with the float32 TFLite model of the same SavedModel; clean pixels):", ""]
    lines += [f"- **{n}**: {d['root']} - {d['selection']} (n = {d['n']}; per-layer error on "
              f"{d['layer_images']})" for n, d in r["domains"].items()]
    lines += [f"- **{CALIBRATION}**: the calibration images themselves (ranking: {r['ranking']['on']})", ""]

    lines += ["## Trade-off: the K worst layers kept float", "",
              f"Layers ranked by `{r['ranking']['metric']}` on the calibration images only.  Agreement % "
              "(flips/n) with float32; latency: 1 thread, median, interleaved in one process.", "",
              "| model | float layers | " + " | ".join(doms) + " | latency ms | vs int8 | size MB |",
              "|---|---|" + "---|" * len(doms) + "---|---|---|"]
    for row in [*r["tradeoff"], *r["baselines"]]:
        kept = ", ".join(row.get("float_layers", [])) or ("-" if "k" in row else "(all float)")
        lines.append(f"| {row['model']} | {kept} | "
                     + " | ".join(_agreement_cell(row["domains"].get(d)) for d in doms)
                     + f" | {_fmt(row['latency_ms'])} | {_fmt(row['latency_vs_int8_pct'], 1)} % | "
                       f"{row['bytes'] / 1e6:.2f} |")
    lines += ["", f"**Recommended K = {r['recommended_k']}** (`wbc-edge export RUN --int8-mixed "
                  f"--int8-float-layers {r['recommended_k']}`): {r['recommendation_rule']}.", ""]

    lines += ["## Calibration set: ranges or layers?", "",
              "Full int8 (no float layers) per calibration arm, judged on the same images (a foreign arm's "
              "calibration images are left out of every arm's score).", "",
              "| arm | calibration | " + " | ".join(r["domains"]) + " |",
              "|---|---|" + "---|" * len(r["domains"])]
    for a in r["calibration_arms"]:
        label = a["arm"] + (" (export default)" if a.get("default") else "") + \
            (" **diagnostic only**" if a["diagnostic_only"] else "")
        lines.append(f"| {label} | {a['description']} | "
                     + " | ".join(_agreement_cell(a["domains"].get(d)) for d in r["domains"]) + " |")
    lines += ["", "If widening the calibration (clean -> augmented -> + foreign) does not move a domain's "
                  "agreement, its error is not a range problem: it is the rounding of weights and "
                  "activations spread over the layers.", ""]
    sus = r["range_suspects"]
    if sus:
        lines += ["Layers whose error on a domain is >= 1.5x their error on the calibration images (values "
                  "outside the calibrated range):", ""]
        lines += [f"- {s['domain']}: {s['layer']} {s['rmse_over_scale']} vs {s['reference_rmse_over_scale']} "
                  f"steps ({s['ratio']}x)" for s in sus[:10]]
    else:
        lines += ["No layer's error on any domain is >= 1.5x (and >= 0.5 steps) its error on the calibration "
                  "images: no sign of activations leaving the calibrated ranges."]
    lines += ["", f"## Per-layer error (each op's own int8 error; RMSE in quantisation steps, "
                  f"{ROUNDING_FLOOR:.2f} = pure rounding)", "",
              f"Worst {TOP_LAYERS} by the ranking; the full table (every op, every metric) is in report.json "
              "and layers.png.", "",
              "| # | layer | op | " + " | ".join(f"{d} RMSE/scale" for d in doms)
              + f" | {CALIBRATION} mean abs % of range | {CALIBRATION} max abs/scale |",
              "|---|---|---|" + "---|" * len(doms) + "---|---|"]
    by_layer = {row["layer"]: row for row in r["layers"]}
    for name in r["ranking"]["order"][:TOP_LAYERS]:
        row = by_layer[name]
        cal = row["domains"].get(CALIBRATION, {})
        lines.append(f"| {row['index']} | {name} | {row['op']} | "
                     + " | ".join(_fmt(row["domains"].get(d, {}).get("rmse_over_scale")) for d in doms)
                     + f" | {_fmt(cal.get('mean_abs_error_pct_of_range'), 3)} | "
                       f"{_fmt(cal.get('max_abs_error_over_scale'))} |")
    t = r["timing_seconds"]
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
    lines += ["", f"Total {r['total_seconds']:.0f} s ({stages})."]
    return "\n".join(lines) + "\n"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def layers_png(r: dict) -> bytes:
    """RMSE/scale by layer depth, one line per domain (calibration images included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["layers"]
    fig, ax = plt.subplots(figsize=(12, 4.5))
    for dom in [CALIBRATION, *r["domains"]]:
        ys = [row["domains"].get(dom, {}).get("rmse_over_scale") for row in rows]
        ax.plot(range(len(rows)), [float("nan") if y is None else y for y in ys], marker=".", lw=1.2,
                label=dom)
    ax.axhline(ROUNDING_FLOOR, color="grey", ls=":", lw=1, label="pure rounding (0.29)")
    step = max(1, len(rows) // 30)
    ax.set_xticks(range(0, len(rows), step))
    ax.set_xticklabels([rows[i]["layer"] for i in range(0, len(rows), step)], rotation=70, ha="right",
                       fontsize=7)
    ax.set_ylabel("RMSE / scale (quantisation steps)")
    ax.set_xlabel("layer (execution order)")
    ax.set_title("Each op's own int8 error, by depth")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    data = _png(fig)
    plt.close(fig)
    return data


def tradeoff_png(r: dict) -> bytes:
    """Agreement with float32 per domain vs K, and latency vs K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["tradeoff"]
    ks = [row["k"] for row in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for dom in [CALIBRATION, *r["domains"]]:
        a1.plot(ks, [row["domains"][dom]["agreement_pct"] for row in rows], marker="o", label=dom)
    a1.set_xlabel("K (worst layers kept float)")
    a1.set_ylabel("top-1 agreement with float32 (%)")
    a1.set_xticks(ks)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    a2.plot(ks, [row["latency_ms"] for row in rows], marker="o", label="int8 mixed")
    for b in r["baselines"]:
        a2.axhline(b["latency_ms"], ls="--", lw=1, label=b["model"],
                   color="grey" if b["model"] == "float32" else "tan")
    a2.set_xlabel("K")
    a2.set_ylabel("latency, 1 thread (ms, median)")
    a2.set_xticks(ks)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.suptitle("Selective int8: agreement and latency vs K")
    data = _png(fig)
    plt.close(fig)
    return data


def write_report(out_dir: Path, r: dict) -> dict[str, Path]:
    """Write the four files; {kind: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "report.json", "markdown": out_dir / "report.md",
             "layers_png": out_dir / "layers.png", "tradeoff_png": out_dir / "tradeoff.png"}
    atomic.write_json(files["json"], r)
    atomic.write_text(files["markdown"], markdown(r))
    atomic.write_bytes(files["layers_png"], layers_png(r))
    atomic.write_bytes(files["tradeoff_png"], tradeoff_png(r))
    return files
