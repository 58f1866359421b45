"""Write zoomed-out copies of a folder of cell images (a lower-magnification stand-in) for the ARM check.

    .venv/bin/python benchmarks/arm/make_small_cells.py samples/pbc_sample /tmp/small_cells --zoom 0.5
    sudo benchmarks/arm/run_emulated.sh --arch aarch64 export/wbc_int8.tflite /tmp/small_cells samples/pbc_sample

Each image is zoomed out about its centre by `--zoom` (`wbc_edge.data.augment._zoom`, border-median fill, the same
transform as benchmarks/robust/small_cell_probe.py) and saved as PNG under OUT/<class>/<name>_z05.png, so that the
runtime's scale guard (wbc_edge.core.scale_guard) magnifies it back on both machines and the emulated run checks that
path too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from wbc_edge.data.augment import _zoom  # noqa: E402
from wbc_edge.core.preprocess import load_image  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--zoom", type=float, default=0.5)
    args = ap.parse_args()
    src, out = Path(args.src), Path(args.out)
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for f in files:
        a = np.asarray(load_image(f), dtype=np.float32)
        z = np.clip(_zoom(a, args.zoom, np.zeros(2)), 0, 255).astype(np.uint8)
        d = out / f.parent.relative_to(src)
        d.mkdir(parents=True, exist_ok=True)
        tag = f"z{args.zoom:g}".replace(".", "")  # 0.5 -> z05
        Image.fromarray(z).save(d / f"{f.stem}_{tag}.png")
    print(f"{len(files)} images -> {out}")


if __name__ == "__main__":
    main()
