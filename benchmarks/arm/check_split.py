"""Cross-machine determinism of the leak-free split: run natively and under aarch64 emulation, compare.

    python benchmarks/arm/check_split.py DATA_ROOT OUT.csv [--seed 42]
prints one JSON line: machine, python, numpy, pillow, number of files, merged groups, manifest sha256.
Only numpy + Pillow + wbc_edge.data are needed (no TensorFlow, no LiteRT).
"""

import json
import platform
import sys
import time

import numpy
import PIL

from wbc_edge.data import split_dataset

root, out = sys.argv[1], sys.argv[2]
seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 42
t = time.time()
scan, manifest, report = split_dataset(root, out, seed=seed, progress=False)
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__,
                  "pillow": PIL.__version__, "files": report.num_files, "merged_groups": report.merged_groups,
                  "near_duplicate_pairs": report.near_duplicate_pairs, "sha256": report.sha256,
                  "seconds": round(time.time() - t, 1)}))
