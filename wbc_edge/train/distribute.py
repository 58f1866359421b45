"""tf.distribute for the full mode: the strategy by name, and which process of a multi-worker run writes.

Why the worker split: under MultiWorkerMirroredStrategy every worker runs the same program (saves and
predictions included - they are collective operations), but only the chief may write RUN_DIR.  The other
workers write the same files into their own scratch folder, RUN_DIR/.workers/worker_<index>, so nothing
races on one file; `run_dir.prepare_run` accepts a RUN_DIR that holds only that folder, because a worker
may create it before the chief starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.errors import WbcEdgeError
from ..core.tfcompat import import_tf
from .run_dir import WORKERS_DIR


def worker_role() -> tuple[bool, int]:
    """(is_chief, index) of this process under MultiWorkerMirroredStrategy, from TF_CONFIG: the 'chief'
    task, or worker 0 when the cluster has no chief; (True, 0) without TF_CONFIG."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True, 0
    try:
        conf = json.loads(raw)
        task = conf.get("task", {})
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
    except (ValueError, AttributeError, TypeError) as exc:
        raise WbcEdgeError(f"TF_CONFIG is not valid JSON with a task type/index ({exc})") from None
    if kind == "chief":
        return True, index
    has_chief = "chief" in conf.get("cluster", {})
    return (kind == "worker" and index == 0 and not has_chief), index


def worker_out_dir(out_dir: str, index: int) -> str:
    """Where a non-chief worker writes its (identical, discarded) copy of the run."""
    return str(Path(out_dir) / WORKERS_DIR / f"worker_{index}")


def make_strategy(name: str):
    """tf.distribute strategy by name.  'mirrored' uses all GPUs, or all logical CPUs when there is no GPU
    (that is how it is tested here); 'multiworker' reads the standard TF_CONFIG environment variable."""
    tf, _ = import_tf()
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise WbcEdgeError("--distribute multiworker needs the TF_CONFIG environment variable "
                               "(cluster spec + this worker's task); see docs/TRAINING.md")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise WbcEdgeError(f"unknown --distribute {name!r} (none | mirrored | multiworker)")
