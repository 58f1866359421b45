"""`--distribute multiworker` as two real processes on localhost (TF_CONFIG), started the way that used to
fail: the non-chief worker first, so that it creates RUN_DIR/.workers/ before the chief looks at RUN_DIR."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs in each worker: trains, then reports every file it wrote (atomic writes end in os.replace, audited as
# os.rename; plain writes as open) below RUN_DIR, so the test can tell who wrote what.
WORKER = textwrap.dedent("""
    import json, os, sys
    out = sys.argv[1]
    written = set()

    def audit(event, args):
        if event == "os.rename":
            written.add(os.path.abspath(os.fsdecode(args[1])))
        elif event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2] or 0
            if (mode and set(str(mode)) & set("wax+")) or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                written.add(os.path.abspath(os.fsdecode(args[0])))

    sys.addaudithook(audit)
    from wbc_edge.model.network import ModelConfig
    from wbc_edge.train import TrainConfig, train

    cfg = TrainConfig(data_root=sys.argv[2], out_dir=out, split_manifest=sys.argv[3], mode="full",
                      distribute="multiworker", epochs=1, batch_size=8,
                      model=ModelConfig(alpha=0.35, input_size=96, weights="none"))
    result = train(cfg, progress=False)
    base = os.path.abspath(out)
    print(json.dumps({"run_dir": str(result.run_dir), "labels": result.labels,
                      "written": sorted(p for p in written if p.startswith(base + os.sep))}))
""")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def sample_split(sample_root, tmp_path_factory):
    from wbc_edge.data import split_dataset

    out = tmp_path_factory.mktemp("split") / "split.csv"
    split_dataset(sample_root, out, seed=1, progress=False)
    return out


@pytest.mark.slow  # two TensorFlow processes: ~4 min on 2 busy CPU cores
def test_two_local_workers_train_and_only_the_chief_writes_the_run(sample_root, sample_split, tmp_path):
    out = tmp_path / "run"
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}

    def start(index: int) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(REPO),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        return subprocess.Popen([sys.executable, "-c", WORKER, str(out), str(sample_root), str(sample_split)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    procs = [start(1)]  # the non-chief first: it creates RUN_DIR/.workers/worker_1
    try:
        deadline = time.monotonic() + 240
        while not (out / ".workers").exists() and procs[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert (out / ".workers").is_dir() and not (out / "config.json").exists()
        procs.insert(0, start(0))  # the chief (worker 0: the cluster has no 'chief' task)
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stderr[-3000:]
    chief, worker = (json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in results)

    scratch = out / ".workers" / "worker_1"
    assert Path(chief["run_dir"]) == out and Path(worker["run_dir"]) == scratch
    assert chief["labels"] == worker["labels"] and len(chief["labels"]) == 5
    for name in ("config.json", "model.keras", "run.json", "split.csv", "history.json", "test_metrics.json"):
        assert (out / name).is_file(), name
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["out_dir"] == str(out) and run["config"]["distribute"] == "multiworker"
    # The chief wrote its run files and nothing in the worker's scratch; the worker wrote only there.
    assert chief["written"] and not [p for p in chief["written"] if p.startswith(str(out / ".workers"))]
    assert worker["written"] and all(p.startswith(str(scratch) + os.sep) for p in worker["written"]), \
        worker["written"]
    assert str(out / "run.json") in chief["written"]
