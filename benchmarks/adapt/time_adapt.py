"""Time `wbc-edge adapt` on 50 labelled images per class (the issue's <= 5 min on 2 cores).

    nice -n 19 .venv/bin/python benchmarks/adapt/time_adapt.py --source runs/robust/robust_s42 \
        --pbc ../shared/data/pbc --out benchmarks/adapt/results/timing_50_per_class.json

The "lab" is a stand-in: 70 images per class from the PBC *test* split (copied to a temporary folder), of which
`--per-class 50` are used for adapting and 20 held out - the time does not depend on which images they are.
Replay (400 PBC train images) comes from the source run, as by default.  Records wall time, the CPU time of
the command (user + sys, all threads) and the load average, because this host is shared with other jobs: the
wall time of an idle 2-core machine lies between CPU time / 2 and the wall time measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", default="runs/robust/robust_s42")
    ap.add_argument("--pbc", default="../shared/data/pbc")
    ap.add_argument("--split", default="benchmarks/training/pbc224_cached/split.csv")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--images", type=int, default=70, help="images per class in the stand-in lab folder")
    ap.add_argument("--out", default="benchmarks/adapt/results/timing_50_per_class.json")
    ap.add_argument("--wbc", default=str(REPO / ".venv" / "bin" / "wbc-edge"))
    args = ap.parse_args()
    os.chdir(REPO)
    from wbc_edge.data import SplitManifest

    tmp = Path(tempfile.mkdtemp(prefix="wbc_adapt_timing_"))
    lab, run = tmp / "lab", tmp / "run"
    by_class = defaultdict(list)
    for r in SplitManifest.load(args.split).rows:
        if r.split == "test":
            by_class[r.label].append(r.path)
    for label, paths in by_class.items():
        (lab / label).mkdir(parents=True)
        for p in paths[:args.images]:
            shutil.copyfile(Path(args.pbc) / p, lab / label / Path(p).name)
    cmd = [args.wbc, "adapt", args.source, str(lab), "--out", str(run), "--per-class", str(args.per_class)]
    load_before = os.getloadavg()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr)
        raise SystemExit(proc.returncode)
    info = json.loads((run / "run.json").read_text())
    out = {
        "command": "wbc-edge adapt SOURCE LAB --out RUN --per-class %d" % args.per_class,
        "source": args.source, "source_model_sha256": info["source"]["model_sha256"],
        "lab": f"{args.images} PBC test images per class (stand-in), {args.per_class} per class adapted",
        "split_counts": info["split_counts"], "replay_images": (info["replay"] or {}).get("images"),
        "finetune": info["finetune"],
        "wall_s": round(wall, 1), "cpu_s": round((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), 1),
        "cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "phases_s": info["timings"], "heldout": info["heldout"],
        "stdout": proc.stdout.splitlines(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "stdout"}, indent=2))
    print("\n".join(out["stdout"]))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
