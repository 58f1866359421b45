"""Probe (not adopted): a per-image cell-scale normalisation that any client could reproduce.

DOMAIN_SHIFT.md names cell scale as the largest factor and suggests either zoom augmentation (the recipe) or "a
cell-size normalisation that every client can reproduce".  This probe tries the second: find the stained
nucleus (dark and blue-purple: (B - G) + (255 - G)/2 above the midpoint between the border's median and the
centre's 95th percentile), centre a square crop on it whose side makes the nucleus' equivalent diameter 0.30 of
the crop (the PBC median), zoom clamped to 0.5-3x, border-median padding, 224 px.

    python benchmarks/robust/cell_norm_probe.py test-time [--model export/wbc_float32.tflite]  # shipped model
    python benchmarks/robust/cell_norm_probe.py make --shared ../shared --out /tmp/nshared      # normalised copies
    SHARED=/tmp/nshared RUNS=runs/probe EXTRA="--limit-per-class 300" \\
      WBC=".venv/bin/python benchmarks/robust/cell_norm_probe.py wbc-edge" \\
      benchmarks/robust/run_recipe.sh robustn 42                        # train + score on normalised images

`wbc-edge` here is the normal CLI with one more preset, `robustn`: the robust recipe with its zoom narrowed to
0.8-1.5x (the normalisation does the rest).  Results are in benchmarks/robust/README.md ("Tried and not
adopted"); nothing of this is in the package.
"""

from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from wbc_edge.core.preprocess import load_image, preprocess  # noqa: E402

WORK = 192
TARGET = 0.30
SETS = ("pbc", "zheng2018_tecom", "zheng2018_cellavision")


def nucleus(im: Image.Image):
    """(x, y, equivalent diameter) of the stained nucleus in original pixels, or None."""
    w0, h0 = im.size
    s = WORK / max(w0, h0)
    a = np.asarray(im.resize((max(1, round(w0 * s)), max(1, round(h0 * s))), Image.Resampling.BILINEAR),
                   dtype=np.float32)
    score = (a[..., 2] - a[..., 1]) + 0.5 * (255 - a[..., 1])
    h, w = score.shape
    bw = max(1, round(0.05 * min(h, w)))
    border = np.concatenate([score[:bw].ravel(), score[-bw:].ravel(), score[:, :bw].ravel(), score[:, -bw:].ravel()])
    cy, cx = np.mgrid[0:h, 0:w]
    r = np.hypot((cy - h / 2) / h, (cx - w / 2) / w)
    bg, fg = np.median(border), np.percentile(score[r < 0.25], 95)
    mask = (score > bg + 0.5 * (fg - bg)) & (r < 0.45)
    if mask.sum() < 10:
        return None
    return cx[mask].mean() / s, cy[mask].mean() / s, 2 * np.sqrt(mask.sum() / np.pi) / s


def normalise(im: Image.Image, frac: float = TARGET, zmin: float = 0.5, zmax: float = 3.0) -> Image.Image:
    found = nucleus(im)
    if found is None:
        return im
    xc, yc, d = found
    side0 = min(im.size)
    side = float(np.clip(d / frac, side0 / zmax, side0 / zmin))
    a = np.asarray(im)
    bw = max(1, round(0.05 * side0))
    edge = np.concatenate([a[:bw].reshape(-1, 3), a[-bw:].reshape(-1, 3), a[:, :bw].reshape(-1, 3),
                           a[:, -bw:].reshape(-1, 3)])
    fill = tuple(int(v) for v in np.median(edge, axis=0))
    box = (xc - side / 2, yc - side / 2, xc + side / 2, yc + side / 2)
    return im.transform((224, 224), Image.Transform.EXTENT, box, resample=Image.Resampling.BILINEAR, fillcolor=fill)


def _copy(job):
    src, dst = job
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    normalise(load_image(src)).save(tmp, format="JPEG", quality=95)
    os.replace(tmp, dst)


def make(shared: Path, out: Path) -> None:
    jobs = [(f, out / "data" / s / f.relative_to(shared / "data" / s))
            for s in SETS for f in sorted((shared / "data" / s).rglob("*.jpg"))]
    (out / "weights").exists() or (out / "weights").symlink_to((shared / "weights").resolve())
    with Pool(2) as pool:
        for _ in pool.imap_unordered(_copy, jobs, chunksize=32):
            pass
    print(f"{len(jobs)} images -> {out / 'data'}")


def test_time(shared: Path, model: str) -> None:
    """Balanced accuracy of the shipped float32 file with each test-time transform (PBC: 60 random per class)."""
    from wbc_edge.runtime.classifier import Classifier

    clf = Classifier(model, num_threads=2)
    transforms = {"as is": lambda im: im, "normalised": normalise,
                  "normalised, zoom >= 0.9x": lambda im: normalise(im, zmin=0.9),
                  "grey": lambda im: ImageOps.grayscale(im).convert("RGB")}
    rng = np.random.default_rng(1)
    for s in SETS:
        items = []
        for c in sorted(p.name for p in (shared / "data" / s).iterdir() if p.is_dir()):
            files = sorted((shared / "data" / s / c).glob("*.jpg"))
            if s == "pbc":
                files = [files[i] for i in rng.choice(len(files), 60, replace=False)]
            items += [(f, c) for f in files]
        classes = sorted({c for _, c in items} - ({"basophil"} if s == "zheng2018_tecom" else set()))
        for name, fn in transforms.items():
            pred = [clf.labels[int(np.argmax(clf.predict_pixels(preprocess(fn(load_image(f)))[None])[0]))]
                    for f, _ in items]
            rec = {c: np.mean([p == c for (_, t), p in zip(items, pred, strict=True) if t == c]) for c in classes}
            print(f"{s:24s} {name:26s} bal. acc {100 * np.mean(list(rec.values())):5.1f} %  "
                  + " ".join(f"{c[:2].upper()} {100 * v:3.0f}" for c, v in rec.items()), flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "wbc-edge":
        import wbc_edge.data.augment as aug
        aug.PRESETS["robustn"] = aug.preset("robust", zoom_min=0.8, zoom_max=1.5)
        from wbc_edge.cli import main as cli
        sys.argv = ["wbc-edge"] + sys.argv[2:]
        sys.exit(cli())
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["make", "test-time"])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    ap.add_argument("--out", type=Path, default=Path("/tmp/nshared"))
    ap.add_argument("--model", default=str(ROOT / "export" / "wbc_float32.tflite"))
    args = ap.parse_args()
    make(args.shared, args.out) if args.what == "make" else test_time(args.shared, args.model)


if __name__ == "__main__":
    main()
