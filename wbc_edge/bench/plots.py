"""Accuracy vs p50 latency of a bench result as a PNG: which variant buys how much speed for how much accuracy.

matplotlib is imported only here, only when a plot is asked for (a runtime-only install has none).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["plot"]


def plot(result: dict, path: str | os.PathLike) -> Path:
    """Accuracy vs p50 latency (one point per variant, at the first thread count) as a PNG, atomically.

    Raises WbcEdgeError when matplotlib is not installed (runtime-only installs).
    """
    from ..core.atomic import atomic_path
    from ..metrics import pyplot

    plt = pyplot()
    pts = []
    for v in result["variants"]:
        lat = (v.get("latency") or [None])[0]
        p = v.get("parity")
        if lat is None or p is None or lat.get("p50_ms") is None:
            continue
        pts.append((v["name"] + (" (ref)" if v["is_reference"] else ""), lat["p50_ms"], 100 * p["accuracy"],
                    lat["threads"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        # A colour-coded legend rather than labels next to the points: int8/QAT (and float32/float16)
        # nearly coincide, and stacked labels would end up next to the wrong point.
        for name, x, y, _ in sorted(pts, key=lambda t: t[1]):
            ax.scatter([x], [y], s=45, label=f"{name}: {y:.2f} %, {x:.2f} ms")
        if pts:
            ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
        xs = [x for _, x, _, _ in pts]
        ys = [y for _, _, y, _ in pts]
        if ys:
            lo = min(ys)
            bottom = max(0.0, lo - max(2.0, 0.2 * (100 - lo)))
            ax.set_ylim(bottom, max(ys) + 0.15 * (max(ys) - bottom) + 0.3)
        if xs and min(xs) > 0 and max(xs) / min(xs) > 8:
            from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, 50 ms
            ax.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers instead of 10^0 ...
            ax.xaxis.set_minor_formatter(NullFormatter())    # minor labels overprinted each other
        thr = sorted({t for *_, t in pts})
        ax.set_xlabel(f"p50 latency per image (ms, {', '.join(map(str, thr))} thread(s))")
        ax.set_ylabel("accuracy (%)")
        s = result.get("system", {})
        ax.set_title(f"wbc-edge bench: {s.get('device', '')} ({s.get('arch', '')})", fontsize=10)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        out = Path(path)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return out
