"""Why int8 flips predictions on other labs' images: the float model's own top-2 margin, per domain.

    .venv/bin/python benchmarks/diagnose/margins.py --models export --shared ../shared \
        --split-manifest benchmarks/training/pbc224_cached/split.csv --out benchmarks/diagnose/results/margins

A variant flips an image when its output error exceeds the float reference's margin there (top-1 minus top-2
probability).  This script measures both sides, per domain: the reference's margin distribution, and for each
variant its output error (|dp| of the top-1 class) and where its flips fall by margin.  If a domain has many
images with tiny margins, no quantised variant can reach a high agreement on it - the limit is the float
model, not the converter.  Runtime only (numpy + Pillow + LiteRT): the models are the exported .tflite files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from wbc_edge.core import atomic  # noqa: E402
from wbc_edge.data import SplitManifest, scan_dataset  # noqa: E402
from wbc_edge.core.preprocess import preprocess  # noqa: E402
from wbc_edge.runtime import Classifier  # noqa: E402

BINS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.01)


def domain_files(shared: Path, manifest: str | None) -> dict[str, list[str]]:
    out = {}
    pbc = shared / "data" / "pbc"
    if manifest and pbc.is_dir():
        rows = [r for r in SplitManifest.load(manifest).rows if r.split == "test"]
        out["PBC test"] = [str(pbc.joinpath(*r.path.split("/"))) for r in rows]
    for name in ("zheng2018_tecom", "zheng2018_cellavision"):
        root = shared / "data" / name
        if root.is_dir():
            scan = scan_dataset(str(root))
            out[name] = [str(Path(scan.root) / r.path) for r in scan.records]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="export", help="folder of .tflite files; wbc_float32.tflite is the reference")
    ap.add_argument("--shared", default=os.environ.get("WBC_SHARED", "../shared"))
    ap.add_argument("--split-manifest", default="benchmarks/training/pbc224_cached/split.csv")
    ap.add_argument("--out", default="benchmarks/diagnose/results/margins")
    args = ap.parse_args()
    models = Path(args.models)
    ref_path = models / "wbc_float32.tflite"
    variants = sorted(p for p in models.glob("*.tflite") if p != ref_path)
    ref = Classifier(ref_path)
    doms = domain_files(Path(args.shared), args.split_manifest)
    result = {"reference": str(ref_path), "bins": list(BINS), "domains": {}}
    for dom, files in doms.items():
        px = np.stack([preprocess(f, ref.input_size) for f in files])
        p_ref = ref.predict_pixels(px)
        top = np.sort(p_ref, 1)
        margin = top[:, -1] - top[:, -2]
        top1 = p_ref.argmax(1)
        counts = np.histogram(margin, BINS)[0]
        d = {"n": len(files), "margin_quantiles": {q: float(np.quantile(margin, q)) for q in (0.005, 0.01, 0.02, 0.05, 0.5)},
             "images_per_bin": counts.tolist(), "variants": {}}
        for v in variants:
            p = Classifier(v).predict_pixels(px)
            flip = p.argmax(1) != top1
            err = np.abs(p[np.arange(len(p)), top1] - p_ref[np.arange(len(p)), top1])
            fb = np.histogram(margin[flip], BINS)[0]
            d["variants"][v.stem] = {"agreement": float(1 - flip.mean()), "flips": int(flip.sum()),
                                     "flips_per_bin": fb.tolist(), "dp_top1_median": float(np.median(err)),
                                     "dp_top1_p99": float(np.quantile(err, 0.99)),
                                     "max_flip_margin": float(margin[flip].max()) if flip.any() else None}
            print(f"{dom}: {v.stem} agreement {100 * (1 - flip.mean()):.2f} % ({int(flip.sum())} flips), "
                  f"|dp| median {np.median(err):.4f} p99 {np.quantile(err, 0.99):.3f}", flush=True)
        result["domains"][dom] = d
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "margins.json", result)
    atomic.write_text(out / "margins.md", to_markdown(result))
    print(to_markdown(result))


def to_markdown(r: dict) -> str:
    labels = [f"{a:g}-{b:g}" if b <= 1 else f"≥{a:g}" for a, b in zip(BINS[:-1], BINS[1:], strict=True)]
    lines = [f"Reference: `{r['reference']}` (float32). Margin = top-1 minus top-2 probability of the reference.", ""]
    for dom, d in r["domains"].items():
        q = d["margin_quantiles"]
        lines += [f"### {dom} (n = {d['n']})", "",
                  f"Reference margin quantiles: 0.5 % {q[0.005]:.3f}, 1 % {q[0.01]:.3f}, 2 % {q[0.02]:.3f}, "
                  f"5 % {q[0.05]:.3f}, median {q[0.5]:.3f}.", "",
                  "| variant | agreement % | flips | " + " | ".join(f"flips, margin {b}" for b in labels)
                  + " | top-1 |Δp| median | p99 |",
                  "|---|---:|---:|" + "---:|" * len(labels) + "---:|---:|",
                  "| (images in the bin) | | | " + " | ".join(str(c) for c in d["images_per_bin"]) + " | | |"]
        for v, s in d["variants"].items():
            lines.append(f"| {v} | {100 * s['agreement']:.2f} | {s['flips']} | "
                         + " | ".join(str(c) for c in s["flips_per_bin"])
                         + f" | {s['dp_top1_median']:.4f} | {s['dp_top1_p99']:.3f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
