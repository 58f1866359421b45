"""Record one `wbc-edge adapt` run through the CLI, end to end: Tecom as the new lab, k = 10 per class, seed 0.

    .venv/bin/python benchmarks/adapt/cli_run.py --source runs/robust/robust_s3 \
        --lab ../shared/data/zheng2018_tecom --per-class 10 --seed 0

Why: the learning curve (learning_curve.py) calls the library with cached activations shared by all runs; this
shows what a user types and sees, and how long the whole command takes on this host.  The run directory goes
to a temporary folder and is deleted (it holds a split.csv naming the Tecom files, which are not shipped);
only the command, its printed output, the time and run.json's summary numbers are kept, in
results_s3/cli_<name>.json (--out).  The command runs under `nice -n 10` (this host is shared).
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", default="runs/robust/robust_s3")
    ap.add_argument("--lab", default="../shared/data/zheng2018_tecom")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="tecom_k10_seed0")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "adapt" / "results_s3"),
                    help="folder for cli_<name>.json (results_s3: the shipped model's records)")
    ap.add_argument("--wbc", default=str(REPO / ".venv" / "bin" / "wbc-edge"))
    args = ap.parse_args()
    os.chdir(REPO)
    tmp = Path(tempfile.mkdtemp(prefix="wbc_adapt_cli_"))
    run = tmp / "run"
    shown = ["wbc-edge", "adapt", args.source, args.lab, "--out", "/tmp/lab_run", "--per-class", str(args.per_class),
             "--seed", str(args.seed)]
    cmd = ["nice", "-n", "10", args.wbc, *shown[1:4], "--out", str(run), *shown[6:]]
    load_before = os.getloadavg()
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.time() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [ln.replace(str(run), "/tmp/lab_run").replace(str(Path(args.lab).resolve()), args.lab)
             for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0:
        print("\n".join(lines))
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(proc.returncode)
    info = json.loads((run / "run.json").read_text())
    out = {
        "command": " ".join(shown), "source_model_sha256": info["source"]["model_sha256"],
        "labels": info.get("labels"), "split_counts": info["split_counts"], "split_per_class": info["split_per_class"],
        "replay": {k: v for k, v in (info["replay"] or {}).items() if k != "data_root"},
        "finetune": info["finetune"], "test": info["test"], "heldout": info["heldout"],
        "calibration": info["calibration"], "phases_s": info["timings"],
        "wall_s": round(wall, 1), "cpu_s": round((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), 1),
        "cpus": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
        "nice": 10, "output": lines,
    }
    dest = Path(args.out) / f"cli_{args.name}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print("\n".join(lines))
    print(f"-> {dest} ({wall:.0f} s)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
