"""The run directory: creating or resuming RUN_DIR, its split and labels, state.json, atomic weight saves.

Why this is careful: a training run takes hours and is interrupted (Ctrl-C, a reboot, a preempted node).
Re-running the same command must continue it - never silently start over, never mix two configs, never
leave a half-written file under a final name - and `--force` must not destroy a finished run's artifacts
before the new ones replace them.  So: config.json is compared on resume, the split of an unfinished run
lives in checkpoints/ until the run finishes, and every file is written atomically (`wbc_edge.core.atomic`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import NamedTuple

from ..core import atomic
from ..data import SplitManifest, split_dataset
from ..core.errors import DatasetError, WbcEdgeError
from ..core.labels import Labels, legacy_labels
from ..core.progress import Progress, resolve
from .config import TrainConfig

#: The split of an unfinished run (becomes RUN_DIR/split.csv when the run finishes).
PENDING_SPLIT = "checkpoints/split.csv"
#: Scratch folders of the non-chief workers of a multi-worker run (RUN_DIR/.workers/worker_<i>).
WORKERS_DIR = ".workers"


class RunState:
    """Small resumable state file (atomic JSON): which phases and epochs are done, the best score so far."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, **kv) -> None:
        self.data.update(kv)
        atomic.write_json(self.path, self.data)


def save_weights_atomic(model, path: Path) -> None:
    """`model.save_weights` into a temp file beside `path`, then renamed over it: an interruption or a full
    disk mid-save leaves the previous weights intact.  (The temp name keeps the suffix, which tf_keras reads
    to pick the format: '.weights.h5' = Keras v3, '.h5' = legacy HDF5.)"""
    with atomic.atomic_path(path) as tmp:
        model.save_weights(tmp)


class FinetuneFiles:
    """Where the cached fine-tune keeps its candidates, named by epoch.

    state.json is the commit point of an epoch and is written after that epoch's files; because each file's
    name says which epoch it holds, the record can never point at weights written after it (an interruption
    between the two leaves a file no record refers to, removed by `prune`).  The head-only baseline is the
    head phase's own file, written once before the phase is marked done.
    """

    def __init__(self, checkpoints: Path):
        self.dir = checkpoints
        self.head = checkpoints / "head.weights.h5"

    def best_path(self, epoch: int) -> Path:
        """Where fine-tune epoch `epoch`'s weights are written when it is the best so far."""
        return self.dir / f"best_e{epoch}.weights.h5"

    def best(self, epoch: int) -> Path:
        """The weights of a selection candidate: the head-only model (epoch 0) or fine-tune epoch `epoch`."""
        if epoch == 0:
            return self.head
        return _or_legacy(self.best_path(epoch), self.dir / "best.weights.h5")

    def swa_path(self, epoch: int) -> Path:
        """Where the running weight average through fine-tune epoch `epoch` is written."""
        return self.dir / f"swa_e{epoch}.npz"

    def swa(self, epoch: int) -> Path:
        """The running weight average through fine-tune epoch `epoch`, to read."""
        return _or_legacy(self.swa_path(epoch), self.dir / "swa.npz")

    def prune(self, keep: set[Path]) -> None:
        """Remove the candidates no record refers to any more."""
        for pattern in ("best_e*.weights.h5", "swa_e*.npz", "best.weights.h5", "swa.npz"):
            for path in self.dir.glob(pattern):
                if path not in keep:
                    path.unlink(missing_ok=True)


def _or_legacy(path: Path, legacy: Path) -> Path:
    """`path`, or the single unnumbered file of a run started before the files were named by epoch."""
    return legacy if not path.exists() and legacy.exists() else path


class PreparedRun(NamedTuple):
    run_dir: Path
    manifest: SplitManifest
    resumed: bool
    #: The config as recorded in config.json: `labels` and `model.num_classes` from the data.
    config: TrainConfig
    labels: Labels


def prepare_run(cfg: TrainConfig, *, force: bool = False,
                progress: Progress | bool | None = True) -> PreparedRun:
    """Create or resume RUN_DIR, settle its split manifest and class list; see the module docstring."""
    progress = resolve(progress)
    run = Path(cfg.out_dir)
    cfg_file = run / "config.json"
    if cfg.sources:  # several labs: the data root is RUN_DIR/sources (links, made below), part of the config
        from ..data.sources import SOURCES_DIR

        cfg = dataclasses.replace(cfg, data_root=str(run / SOURCES_DIR))
    # The split of the run in progress lives in checkpoints/ until the run finishes: a forced retrain must
    # not replace the split.csv that belongs to the previous, still present model.keras.  Its presence also
    # marks the run unfinished (so an interrupted --force retrain resumes instead of looking finished).
    pending_split = run / PENDING_SPLIT
    resumed = False
    stored: dict | None = None
    if _occupied(run):
        finished = ((run / "model.keras").exists() and (run / "run.json").exists()
                    and not pending_split.exists())
        stored = _read_config(cfg_file)
        pinned = cfg.labels is not None
        if force:
            # Start over, but keep the previous finished artifacts until the new ones replace them.
            stored = None
            for name in ("state.json", "config.json"):
                (run / name).unlink(missing_ok=True)
            shutil.rmtree(run / "checkpoints", ignore_errors=True)
        elif finished:
            raise WbcEdgeError(f"{run}: already holds a finished run (model.keras); use --force to retrain "
                               "into it or choose another --out")
        elif stored is not None and _comparable(stored, pinned) != _comparable(cfg.to_dict(), pinned):
            previous, now = _comparable(stored, pinned), _comparable(cfg.to_dict(), pinned)
            diff = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
            raise WbcEdgeError(f"{run}: holds an unfinished run with a different config ({', '.join(diff)}); "
                               "re-run with the same options to resume, or --force to start over")
        elif stored is not None:
            resumed = True
            progress.say(f"Resuming the unfinished run in {run}")
        else:
            raise WbcEdgeError(f"{run}: directory exists and is not a wbc-edge run; use --force or another --out")
    run.mkdir(parents=True, exist_ok=True)
    if cfg.sources:  # the labs under one root, RUN_DIR/sources/<name> (re-linked on resume: folders may move)
        from ..data import Source, link_sources

        link_sources(run, [Source(**s) for s in cfg.sources])
    if not resumed:
        atomic.write_json(cfg_file, cfg.to_dict())

    requested = cfg.labels if cfg.labels is not None else _stored_labels(stored)
    pinned_labels = Labels.from_list(requested) if requested is not None else None
    if cfg.split_manifest:
        manifest = SplitManifest.load(cfg.split_manifest)
        # Canonical bytes, so that split.csv's sha256 is the manifest's sha256() recorded in run.json.
        manifest.save(pending_split)
    elif pending_split.exists() and resumed:
        manifest = SplitManifest.load(pending_split)
    elif cfg.sources:
        from ..data import Source, split_sources

        split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        progress.say(f"Splitting {len(cfg.sources)} source labs, each on its own (seed {split_seed}) ...")
        res = split_sources([Source(**s) for s in cfg.sources], seed=split_seed, test_fraction=cfg.test_fraction,
                            val_fraction=cfg.val_fraction, labels=pinned_labels, progress=progress)
        manifest = res.manifest
        manifest.save(pending_split)
        atomic.write_json(run / "sources.json", {"sources": res.report})
    else:
        split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        progress.say(f"Scanning {cfg.data_root} and computing a leak-free split (seed {split_seed}) ...")
        _, manifest, report = split_dataset(cfg.data_root, pending_split, seed=split_seed, labels=pinned_labels,
                                            test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
                                            progress=progress)
        progress.say(f"  {report.num_files} images in {report.num_groups} groups ({report.merged_groups} groups merge "
                     f"duplicates); " + ", ".join(f"{s} {sum(c.values())}" for s, c in report.summary.items()))
    labels = manifest.label_set
    if pinned_labels is not None:
        if set(pinned_labels) != set(labels):
            origin = "the labels asked for" if cfg.labels is not None else f"the labels {cfg_file} records"
            raise DatasetError(f"{cfg.split_manifest or pending_split}: the split's classes ({', '.join(labels)}) "
                               f"differ from {origin} ({', '.join(pinned_labels)}); use --force to start over")
        labels = pinned_labels  # the recorded order (the model's output order) wins
    cfg = dataclasses.replace(cfg, labels=labels.to_list(),
                              model=dataclasses.replace(cfg.model, num_classes=len(labels)))
    atomic.write_json(cfg_file, cfg.to_dict())
    return PreparedRun(run, manifest, resumed, cfg, labels)


def _occupied(run: Path) -> bool:
    """RUN_DIR exists with something in it.  A folder holding only the non-chief workers' scratch folder
    counts as empty: in a multi-worker run another worker may create it before the chief starts."""
    return run.is_dir() and any(p.name != WORKERS_DIR for p in run.iterdir())


def _read_config(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise WbcEdgeError(f"{path}: not valid JSON ({exc}); use --force to start the run over") from None


def _stored_labels(stored: dict | None) -> list[str] | None:
    """The class list an unfinished run was started with: its config.json `labels`; runs started before
    labels were stored trained the five WBC classes.  None while not yet known (or no stored run)."""
    if stored is None:
        return None
    return stored.get("labels") or legacy_labels(None, "config.json").to_list()


def _comparable(config: dict, pinned_labels: bool) -> dict:
    """config.json as compared on resume.  The class list and the head size come from the data, so they take
    part only when the caller pinned `labels` (old runs without the key had the five WBC classes)."""
    out = json.loads(json.dumps(config))
    labels = out.pop("labels", None) or legacy_labels(None, "config.json").to_list()
    if isinstance(out.get("model"), dict):
        out["model"].pop("num_classes", None)
    if pinned_labels:
        out["labels"] = labels
    return out
