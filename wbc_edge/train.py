"""Training: MobileNetV2 on a leak-free split, in two modes.

`cached` (default, CPU-practical): fine-tuning the whole network at 224 px runs at ~5 img/s on 2 CPU cores
(~7 h for 15 epochs of PBC).  Instead we run the frozen lower part of the backbone ONCE per image (and per
augmented view) and cache its activations at the input of `block_<finetune_from>`; then
  1. head phase: the classifier head is trained (Adam, `head_epochs`, the paper's 15 by default) on pooled
     features computed from the cache by the frozen top blocks - seconds per epoch;
  2. fine-tune phase: the top blocks (from `block_<finetune_from>` up, BatchNorm kept in inference mode) and
     the head are fine-tuned on the cached activations - about a minute per epoch on 2 cores.
Since the model is one flat graph, the bottom and top are views of the same layers: the result is the
ordinary full model, saved as `model.keras`, exactly equal to top(bottom(x)).

`full`: ordinary end-to-end fine-tuning with augmentation in a tf.data pipeline - what a GPU machine or a
cluster should run; supports tf.distribute (MirroredStrategy / MultiWorkerMirroredStrategy via TF_CONFIG)
and resumes through Keras' BackupAndRestore.

Both modes resume after an interruption: re-run the same command on the same RUN_DIR.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import atomic
from .atomic import sha256_file
from .augment import DEFAULT_PRESET, AugmentConfig, augment, preset, shifted_view
from .confidence import save_calibration
from .classes import CLASSES
from .data import require_all_classes
from .errors import DatasetError, WbcEdgeError
from .model import ModelConfig, build_model, resolve_weights
from .preprocess import preprocess
from .tfcompat import import_tf, versions

#: The split of an unfinished run (becomes RUN_DIR/split.csv when the run finishes).
PENDING_SPLIT = "checkpoints/split.csv"
#: Fixed seed of the shifted-val set (the same for every training seed, so selection is comparable).
SHIFTED_VAL_SEED = 20261201


@dataclass
class TrainConfig:
    data_root: str
    out_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    mode: str = "cached"                  # cached | full
    split_manifest: str | None = None     # reuse a saved split instead of computing one
    seed: int = 42
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    batch_size: int = 32
    epochs: int = 15                      # full mode: epochs of end-to-end training (paper: 15)
    learning_rate: float = 1e-3           # Adam, head phase / full mode
    head_epochs: int = 15                 # cached mode: head on frozen features (paper: 15 epochs, Adam)
    finetune_epochs: int = 8              # cached mode: top blocks on cached activations
    finetune_learning_rate: float = 1e-4  # peak of the warm-up + cosine schedule
    finetune_warmup: float = 1.0          # cached mode: epochs of linear learning-rate warm-up
    swa: bool = True                      # cached mode: also try the average of the second half's epochs
    finetune_from: int = 13               # first MobileNetV2 block that is fine-tuned (13 .. 16)
    aug_views: int = 4                    # cached mode: augmented views cached per train image
    aug_preset: str = DEFAULT_PRESET      # the named recipe `augment` was made from (for the record)
    augment: AugmentConfig = field(default_factory=lambda: preset(DEFAULT_PRESET))
    shifted_val: bool = True              # select the model on clean val + held-out shifted val
    shared_cache: str | None = None       # cached mode: folder where seed-independent activations (clean and
                                          # shifted-val views) are shared between runs (pretrained init only)
    class_weights: bool = True
    early_stopping: int | None = None     # patience in epochs (on val accuracy); None = off
    limit_per_class: int | None = None    # quick runs: at most this many images per class and split
    distribute: str = "none"              # none | mirrored | multiworker (full mode)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> TrainConfig:
        raw = dict(raw)
        raw["model"] = ModelConfig(**raw.get("model", {}))
        raw["augment"] = AugmentConfig(**raw.get("augment", {})).validate()
        return cls(**raw)


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    test_accuracy: float
    history: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)


def _say(msg: str, verbose: bool) -> None:
    if verbose:
        print(msg, flush=True)


def _class_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return {i: float(w[i]) for i in range(len(CLASSES))}


def _limit(paths: list[str], labels: np.ndarray, limit: int | None) -> tuple[list[str], np.ndarray]:
    if not limit:
        return paths, labels
    keep = []
    for c in range(len(CLASSES)):
        keep.extend(np.flatnonzero(labels == c)[:limit].tolist())
    keep.sort()
    return [paths[i] for i in keep], labels[keep]


def prepare_run(cfg: TrainConfig, *, force: bool = False, verbose: bool = True):
    """Create/validate RUN_DIR and its split manifest; returns (run_dir, manifest, resumed)."""
    from .data import SplitManifest, split_dataset

    run = Path(cfg.out_dir)
    cfg_file = run / "config.json"
    # The split of the run in progress lives in checkpoints/ until the run finishes: a forced retrain must
    # not replace the split.csv that belongs to the previous, still present model.keras.  Its presence also
    # marks the run unfinished (so an interrupted --force retrain resumes instead of looking finished).
    pending_split = run / PENDING_SPLIT
    resumed = False
    if run.exists() and any(run.iterdir()):
        finished = ((run / "model.keras").exists() and (run / "run.json").exists()
                    and not pending_split.exists())
        same = cfg_file.exists() and json.loads(cfg_file.read_text()) == json.loads(json.dumps(cfg.to_dict()))
        if force:
            # Start over, but keep the previous finished artifacts until the new ones replace them.
            for name in ("state.json", "config.json"):
                (run / name).unlink(missing_ok=True)
            _remove_tree(run / "checkpoints")
        elif finished:
            raise WbcEdgeError(f"{run}: already holds a finished run (model.keras); use --force to retrain "
                               "into it or choose another --out")
        elif cfg_file.exists() and not same:
            previous = json.loads(cfg_file.read_text())
            now = json.loads(json.dumps(cfg.to_dict()))
            diff = sorted(k for k in set(previous) | set(now) if previous.get(k) != now.get(k))
            raise WbcEdgeError(f"{run}: holds an unfinished run with a different config ({', '.join(diff)}); "
                               "re-run with the same options to resume, or --force to start over")
        elif cfg_file.exists():
            resumed = True
            _say(f"Resuming the unfinished run in {run}", verbose)
        else:
            raise WbcEdgeError(f"{run}: directory exists and is not a wbc-edge run; use --force or another --out")
    run.mkdir(parents=True, exist_ok=True)
    atomic.write_json(cfg_file, cfg.to_dict())

    if cfg.split_manifest:
        manifest = SplitManifest.load(cfg.split_manifest)
        atomic.write_bytes(pending_split, Path(cfg.split_manifest).read_bytes())
    elif pending_split.exists() and resumed:
        manifest = SplitManifest.load(pending_split)
    else:
        _say(f"Scanning {cfg.data_root} and computing a leak-free split (seed {cfg.seed}) ...", verbose)
        _, manifest, report = split_dataset(cfg.data_root, pending_split, seed=cfg.seed,
                                            test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
                                            progress=verbose)
        _say(str(report), verbose)
    return run, manifest, resumed


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def train(cfg: TrainConfig, *, force: bool = False, verbose: bool = True) -> TrainResult:
    """Train according to `cfg`, writing everything into cfg.out_dir (see module docstring)."""
    if cfg.mode not in ("cached", "full"):
        raise WbcEdgeError(f"unknown training mode {cfg.mode!r} (expected 'cached' or 'full')")
    if cfg.mode == "cached" and cfg.distribute != "none":
        raise WbcEdgeError("--distribute needs --mode full (cached mode is the single-CPU-machine path)")
    if not 13 <= cfg.finetune_from <= 16:
        raise WbcEdgeError(f"--finetune-from must be a MobileNetV2 block 13..16, got {cfg.finetune_from}")
    if cfg.limit_per_class is not None and cfg.limit_per_class < 1:
        raise WbcEdgeError(f"--limit-per-class must be >= 1, got {cfg.limit_per_class}")
    # A bad --weights value fails now, before RUN_DIR is created or the dataset scanned.
    resolve_weights(cfg.model.weights, cfg.model.alpha)
    if cfg.distribute == "multiworker":
        if not cfg.split_manifest:
            raise WbcEdgeError("--distribute multiworker needs --split-manifest: every worker must train on the "
                               "same split (make it once with `wbc-edge data split`)")
        chief, index = worker_role()
        if not chief:
            # Only the chief writes RUN_DIR; the other workers keep their (identical) copies in a scratch
            # directory inside it, so that nothing races on the same files.
            cfg = dataclasses.replace(cfg, out_dir=str(Path(cfg.out_dir) / ".workers" / f"worker_{index}"))
    t0 = time.time()
    run, manifest, resumed = prepare_run(cfg, force=force, verbose=verbose)
    split_src = cfg.split_manifest or run / PENDING_SPLIT
    manifest.verify(cfg.data_root)  # the manifest must match DATA before hours of training, not mid-way
    data = {}
    for split in ("train", "val", "test"):
        paths, labels = manifest.files(split, cfg.data_root)
        paths, labels = _limit([str(p) for p in paths], np.asarray(labels, dtype=np.int64), cfg.limit_per_class)
        if len(paths) == 0:
            raise DatasetError(f"{split_src}: split '{split}' is empty")
        require_all_classes(labels, f"{split_src}: split '{split}'",
                            "to train" if split == "train" else "to select and score the model")
        data[split] = (paths, labels)
    tf, keras = import_tf()
    keras.utils.set_random_seed(cfg.seed)
    if cfg.mode == "cached":
        trainer = _CachedTrainer(cfg, run, data, verbose)
    else:
        trainer = _FullTrainer(cfg, run, data, verbose)
    model, history, phase_bounds, timings = trainer.run()

    # Final artifacts (atomic).  The reference model is the best-validation checkpoint.
    from .evaluate import compute_metrics, plot_curves, save_metrics

    # split.csv first: from here on the artifacts belong to the new model (the pending split, removed last,
    # keeps the run marked unfinished until run.json is written).
    atomic.write_bytes(run / "split.csv", (run / PENDING_SPLIT).read_bytes())
    with atomic.atomic_path(run / "model.keras") as tmp:
        model.save(tmp)
    hist_cols = _history_columns(history)
    atomic.write_json(run / "history.json", {"epochs": history, "phase_boundaries": phase_bounds, **hist_cols})
    try:
        plot_curves(hist_cols, run / "curves.png", title=f"{model.name} ({cfg.mode} mode)",
                    phase_boundaries=phase_bounds)
    except WbcEdgeError as exc:
        _say(f"(no curves.png: {exc})", verbose)

    # Score the test split with the saved full model on the one preprocessing path, exactly as
    # `wbc-edge evaluate` and export's parity check will (not from the float16 activation cache).
    from .evaluate_model import predict_keras

    t_eval = time.time()
    probs = predict_keras(model, data["test"][0], batch_size=cfg.batch_size, progress=False)
    y_true = data["test"][1]
    metrics = compute_metrics(y_true, probs.argmax(1), list(CLASSES))
    save_metrics(metrics, run, prefix="test_", extra={"split": "test", "n": len(y_true)})
    timings["test_eval_s"] = round(time.time() - t_eval, 1)
    calibration = _fit_calibration(trainer, model, data, cfg)
    save_calibration(run, calibration)
    _say(f"Confidence: temperature {calibration.temperature:.3f} (val ECE {calibration.ece_before:.3f} -> "
         f"{calibration.ece_after:.3f}), abstain below {calibration.abstain_threshold:.3f}", verbose)
    timings["total_s"] = round(time.time() - t0, 1)
    run_info = {
        "config": cfg.to_dict(),
        "versions": versions(),
        "timings": timings,
        "split_manifest_sha256": manifest.sha256(),
        "split_counts": {s: len(data[s][0]) for s in data},
        "resumed": resumed,
        "test": {"accuracy": metrics.accuracy, "balanced_accuracy": metrics.balanced_accuracy,
                 "macro_f1": metrics.macro_f1, "accuracy_ci95": list(metrics.accuracy_ci95)},
        "model_sha256": sha256_file(run / "model.keras"),
        "calibration": calibration.to_dict(),
    }
    atomic.write_json(run / "run.json", run_info)
    (run / PENDING_SPLIT).unlink(missing_ok=True)  # the run is finished
    _say(metrics.format_table(), verbose)
    _say(f"Done in {timings['total_s'] / 60:.1f} min -> {run / 'model.keras'}", verbose)
    return TrainResult(run, run / "model.keras", metrics.accuracy, history, timings)




def _fit_calibration(trainer, model, data: dict, cfg: TrainConfig):
    """Temperature on clean val, abstain threshold on shifted val (see wbc_edge.calibration)."""
    from .calibration import fit_calibration
    from .confidence import shifted_val_pixels
    from .evaluate_model import predict_keras

    y_val = data["val"][1]
    probs = getattr(trainer, "val_probs", None)
    if not probs:  # full mode: no activation cache, run the model
        probs = [predict_keras(model, data["val"][0], batch_size=cfg.batch_size, progress=False)]
        if cfg.shifted_val:
            px = shifted_val_pixels(data["val"][0], cfg.model.input_size).astype(np.float32)
            probs.append(model.predict(px, batch_size=cfg.batch_size, verbose=0))
    shifted = probs[1] if len(probs) > 1 else None
    return fit_calibration(probs[0], y_val, shifted, y_val if shifted is not None else None)


def _history_columns(history: list[dict]) -> dict:
    cols: dict[str, list] = {}
    for key in ("accuracy", "val_accuracy", "loss", "val_loss"):
        cols[key] = [float(h[key]) if h.get(key) is not None else None for h in history]
    return cols


def _load_pixels(path: str, size: int, rng: np.random.Generator | None, aug: AugmentConfig) -> np.ndarray:
    px = preprocess(path, size)
    return augment(px, rng, aug) if rng is not None else px


class _State:
    """Small resumable state file (atomic JSON) for the cached trainer."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, **kv) -> None:
        self.data.update(kv)
        atomic.write_json(self.path, self.data)


class _CachedTrainer:
    def __init__(self, cfg: TrainConfig, run: Path, data: dict, verbose: bool):
        self.cfg, self.run_dir, self.data, self.verbose = cfg, run, data, verbose
        self.tf, self.keras = import_tf()
        self.model = build_model(cfg.model)
        keras = self.keras
        cut = self.model.get_layer(f"block_{cfg.finetune_from}_expand").input
        self.bottom = keras.Model(self.model.input, cut, name="bottom")
        self.top = keras.Model(cut, self.model.output, name="top")
        self.features = keras.Model(cut, self.model.get_layer("pool").output, name="top_features")
        self.cache_dir = run / "checkpoints" / "cache"
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.state = _State(run / "state.json")
        self.size = cfg.model.input_size

    # -- activation cache ---------------------------------------------------------------------------
    def _cache_file(self, split: str, view: int) -> Path:
        return self.cache_dir / f"act_{split}_v{view}.npy"

    def _shared_file(self, split: str, view: int) -> Path | None:
        """Where a seed-independent view's activations are shared between runs, or None.

        Clean views and the fixed-seed shifted val do not depend on the training seed or the augmentation
        recipe - only on the frozen bottom (pretrained weights, alpha, size, cut) and the images - so seeds
        and ablations of one recipe can reuse them.  Never with random init (the bottom differs per seed).
        """
        cfg = self.cfg
        weights = resolve_weights(cfg.model.weights, cfg.model.alpha)
        if not cfg.shared_cache or weights is None or (split == "train" and view > 0):
            return None
        import hashlib

        from .preprocess import PREPROCESS_VERSION

        kind = "shifted" if view > 0 else "clean"
        ident = json.dumps({"weights": weights if weights == "imagenet" else sha256_file(weights),
                            "alpha": cfg.model.alpha, "size": cfg.model.input_size, "cut": cfg.finetune_from,
                            "view": kind, "shifted_seed": SHIFTED_VAL_SEED, "preprocess": PREPROCESS_VERSION,
                            "paths": [str(Path(p).resolve()) for p in self.data[split][0]]}, sort_keys=True)
        return Path(cfg.shared_cache) / f"act_{split}_{kind}_{hashlib.sha256(ident.encode()).hexdigest()[:16]}.npy"

    def extract(self, split: str, view: int) -> np.ndarray:
        """Bottom activations for a split/view, cached in a memmap; resumes from the last full chunk."""
        shared = self._shared_file(split, view)
        shape = (len(self.data[split][0]),) + tuple(int(d) for d in self.bottom.output_shape[1:])
        if shared is not None and shared.exists():
            arr = np.load(shared, mmap_mode="r")
            if arr.shape == shape:
                _say(f"  cache {split} view {view}: reusing {shared}", self.verbose)
                return arr
        arr = self._extract(split, view)
        if shared is not None:
            import shutil

            shared.parent.mkdir(parents=True, exist_ok=True)
            with atomic.atomic_path(shared) as tmp:
                shutil.copyfile(self._cache_file(split, view), tmp)
        return arr

    def _extract(self, split: str, view: int) -> np.ndarray:
        paths, _ = self.data[split]
        path = self._cache_file(split, view)
        key = f"extract_{split}_v{view}"
        done = int(self.state.get(key, 0))
        shape = (len(paths),) + tuple(int(d) for d in self.bottom.output_shape[1:])
        if path.exists() and done > 0:
            arr = np.load(path, mmap_mode="r+")
            if arr.shape != shape:
                done, arr = 0, None
        else:
            arr = None
        if arr is None:
            arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
            done = 0
        if done >= len(paths):
            return arr
        chunk = 256
        t = time.time()
        from concurrent.futures import ThreadPoolExecutor

        # Decoding + augmenting (~20 ms per image for the robust preset) runs in threads while TensorFlow
        # predicts the previous chunk; Pillow and numpy release the GIL for most of it.
        with ThreadPoolExecutor(max_workers=2) as pool:
            def submit(lo):
                hi = min(lo + chunk, len(paths))
                return [pool.submit(self._view_pixels, split, view, i) for i in range(lo, hi)]

            pending = submit(done)
            for start in range(done, len(paths), chunk):
                stop = min(start + chunk, len(paths))
                px = np.stack([f.result() for f in pending]).astype(np.float32)
                pending = submit(stop) if stop < len(paths) else []
                arr[start:stop] = self.bottom.predict(px, batch_size=self.cfg.batch_size,
                                                      verbose=0).astype(np.float16)
                arr.flush()
                self.state.set(**{key: stop})  # resumable per chunk
                if self.verbose:
                    rate = (stop - done) / max(time.time() - t, 1e-6)
                    eta = (len(paths) - stop) / max(rate, 1e-6)
                    print(f"\r  cache {split} view {view}: {stop}/{len(paths)} images  {rate:.1f} img/s  "
                          f"ETA {eta / 60:.1f} min", end="\n" if stop == len(paths) else "", flush=True)
        return arr

    def _view_pixels(self, split: str, view: int, i: int) -> np.ndarray:
        """View 0 is the clean image; train views >= 1 are augmented (seeded by seed, view, image); val
        view 1 is the held-out shifted view, seeded independently of the training seed so that every seed's
        model is selected on the same shifted val."""
        path = self.data[split][0][i]
        if view == 0:
            return _load_pixels(path, self.size, None, self.cfg.augment)
        if split == "train":
            return _load_pixels(path, self.size, np.random.default_rng([self.cfg.seed, view, i]), self.cfg.augment)
        return shifted_view(preprocess(path, self.size), np.random.default_rng([SHIFTED_VAL_SEED, i]))

    def _views(self, split: str) -> int:
        if split == "train":
            return 1 + self.cfg.aug_views
        return 2 if self.cfg.shifted_val else 1

    # -- phases ---------------------------------------------------------------------------------------
    def run(self):
        cfg, keras, tf = self.cfg, self.keras, self.tf
        timings: dict = dict(self.state.get("timings", {}))
        t = time.time()
        _say(f"Caching activations at block_{cfg.finetune_from} input "
             f"({self.bottom.output_shape[1:]}, float16) ...", self.verbose)
        acts = {}
        for split in ("train", "val"):  # the test split is scored on the final model, not from the cache
            acts[split] = [self.extract(split, v) for v in range(self._views(split))]
        timings.setdefault("extract_s", round(time.time() - t, 1))
        self.acts = acts
        history: list[dict] = list(self.state.get("history", []))
        y_train, y_val = self.data["train"][1], self.data["val"][1]
        cw = _class_weights(y_train) if cfg.class_weights else None

        # Phase 1: head on pooled features of the frozen top.
        head_w = self.run_dir / "checkpoints" / "head.weights.h5"
        if not self.state.get("head_done"):
            t = time.time()
            _say(f"Head phase: {cfg.head_epochs} epochs on frozen features ...", self.verbose)
            feats_train = np.concatenate([self.features.predict(a, batch_size=128, verbose=0) for a in acts["train"]])
            y_rep = np.concatenate([y_train] * len(acts["train"]))
            feats_val = self.features.predict(acts["val"][0], batch_size=128, verbose=0)
            inp = keras.Input(shape=feats_train.shape[1:], name="features")
            out = self.model.get_layer("predictions")(self.model.get_layer("head_dropout")(inp))
            head = keras.Model(inp, out, name="head")
            head.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                         loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            h = head.fit(feats_train, y_rep, validation_data=(feats_val, y_val), epochs=cfg.head_epochs,
                         batch_size=cfg.batch_size, class_weight=cw, shuffle=True,
                         verbose=2 if self.verbose else 0)
            for e in range(len(h.history["loss"])):
                history.append({"phase": "head", "epoch": e + 1,
                                **{k: float(v[e]) for k, v in h.history.items()}})
            with atomic.atomic_path(head_w) as tmp:
                self.model.save_weights(tmp)
            timings["head_s"] = round(time.time() - t, 1)
            self.state.set(head_done=True, history=history, timings=timings)
        else:
            self.model.load_weights(head_w)
        n_head = sum(1 for h in history if h["phase"] == "head")

        # Phase 2: fine-tune the top blocks on cached activations: linear warm-up then cosine decay (steadier
        # than a constant rate: the first large steps no longer wreck the head's solution), and the weights of
        # the second half's epochs averaged (SWA; valid as is because BatchNorm stays frozen).  The model kept
        # is whichever of head-only, each epoch and the average scores best on the selection criterion.
        if cfg.finetune_epochs > 0:
            t = time.time()
            self._set_trainable()
            steps = math.ceil(len(y_train) / cfg.batch_size)
            warm = int(round(cfg.finetune_warmup * steps))
            total = cfg.finetune_epochs * steps
            schedule = keras.optimizers.schedules.CosineDecay(
                initial_learning_rate=cfg.finetune_learning_rate * (0.1 if warm else 1.0),
                decay_steps=max(total - warm, 1), alpha=0.01,
                warmup_target=cfg.finetune_learning_rate if warm else None, warmup_steps=warm)
            self.top.compile(optimizer=keras.optimizers.Adam(schedule),
                             loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            ckpt = tf.train.Checkpoint(model=self.top, optimizer=self.top.optimizer)
            mgr = tf.train.CheckpointManager(ckpt, str(self.run_dir / "checkpoints" / "finetune"), max_to_keep=1)
            start_epoch = int(self.state.get("finetune_epoch", 0))
            if start_epoch and mgr.latest_checkpoint:
                ckpt.restore(mgr.latest_checkpoint)
                _say(f"Fine-tune phase: resuming after epoch {start_epoch}", self.verbose)
            best_w = self.run_dir / "checkpoints" / "best.weights.h5"
            swa_file = self.run_dir / "checkpoints" / "swa.npz"
            best = self.state.get("best")
            if best is None:
                # The head-only model is the baseline to beat.  Saved only when no fine-tune state exists,
                # so a resume can never overwrite it with partly fine-tuned weights.
                with atomic.atomic_path(best_w) as tmp:
                    self.model.save_weights(tmp)
                best = {**self._score(acts, y_val), "epoch": 0}
                self.state.set(best=best)
            _say(f"Fine-tune phase: blocks >= {cfg.finetune_from} + head, {cfg.finetune_epochs} epochs, "
                 f"warm-up {warm} steps + cosine from lr {cfg.finetune_learning_rate:g} "
                 f"(head-only {self._describe(best)}) ...", self.verbose)
            stale = int(self.state.get("stale", 0))
            stopped = bool(self.state.get("stopped", False))
            swa_from = cfg.finetune_epochs // 2 + 1  # epochs swa_from..finetune_epochs are averaged
            for epoch in range(start_epoch, 0 if stopped else cfg.finetune_epochs):
                seq = _activation_sequence(acts["train"], y_train, cfg.batch_size, cw,
                                          np.random.default_rng([cfg.seed, 1000 + epoch]), keras)
                te = time.time()
                h = self.top.fit(seq, epochs=1, verbose=2 if self.verbose else 0, shuffle=False)
                score = self._score(acts, y_val)
                rec = {"phase": "finetune", "epoch": n_head + epoch + 1, "loss": float(h.history["loss"][0]),
                       "accuracy": float(h.history["accuracy"][0]), **score,
                       "seconds": round(time.time() - te, 1)}
                history.append(rec)
                improved = score["select"] > best["select"]
                if improved:
                    best = {**score, "epoch": epoch + 1}
                    with atomic.atomic_path(best_w) as tmp:
                        self.model.save_weights(tmp)
                    stale = 0
                else:
                    stale += 1
                if cfg.swa and epoch + 1 >= swa_from:
                    self._swa_add(swa_file, epoch + 1 - swa_from)
                mgr.save()
                stopped = bool(cfg.early_stopping and stale >= cfg.early_stopping)
                self.state.set(finetune_epoch=epoch + 1, best=best, history=history, stale=stale, stopped=stopped)
                _say(f"  fine-tune epoch {epoch + 1}/{cfg.finetune_epochs}: {self._describe(score)} "
                     f"({rec['seconds']:.0f} s){'  *best' if improved else ''}", self.verbose)
                if stopped:
                    _say(f"  early stopping: no improvement of the selection score for {stale} epochs", self.verbose)
                    break
            chosen = f"fine-tune epoch {best['epoch']}"
            if cfg.swa and swa_file.exists() and not stopped:
                with np.load(swa_file) as z:
                    self.model.set_weights([z[f"w{i}"] for i in range(len(z.files) - 1)])
                    n_avg = int(z["count"])
                swa = self._score(acts, y_val)
                _say(f"  average of epochs {swa_from}..{cfg.finetune_epochs} (SWA, {n_avg}): "
                     f"{self._describe(swa)}", self.verbose)
                timings["swa"] = {**swa, "epochs": [swa_from, cfg.finetune_epochs]}
                if swa["select"] >= best["select"]:
                    best, chosen = {**swa, "epoch": "swa"}, f"the average of epochs {swa_from}..{cfg.finetune_epochs}"
                else:
                    self.model.load_weights(best_w)
            else:
                self.model.load_weights(best_w)
            timings["selected"] = best
            _say(f"Selected: {chosen} ({self._describe(best)})", self.verbose)
            timings["finetune_s"] = round(timings.get("finetune_s", 0) + time.time() - t, 1)
        self.state.set(timings=timings)
        # Probabilities of the selected model on clean and shifted val, for the confidence calibration.
        self.val_probs = [self.top.predict(a, batch_size=128, verbose=0) for a in acts["val"]]
        return self.model, history, [n_head] if cfg.finetune_epochs > 0 else [], timings

    def _score(self, acts: dict, y_val: np.ndarray) -> dict:
        """Selection criterion on the val split: clean accuracy, and - with the shifted val - the mean of
        clean accuracy and shifted balanced accuracy, so the model kept is good in-domain *and* robust."""
        from .evaluate import compute_metrics

        out = {}
        probs = self.top.predict(acts["val"][0], batch_size=128, verbose=0)
        out["val_loss"] = float(-np.mean(np.log(np.clip(probs[np.arange(len(y_val)), y_val], 1e-7, 1.0))))
        out["val_accuracy"] = float(np.mean(probs.argmax(1) == y_val))
        out["select"] = out["val_accuracy"]
        if len(acts["val"]) > 1:
            shifted = self.top.predict(acts["val"][1], batch_size=128, verbose=0).argmax(1)
            out["shifted_val_balanced_accuracy"] = compute_metrics(y_val, shifted, CLASSES,
                                                                   bootstrap=0).balanced_accuracy
            out["select"] = 0.5 * (out["val_accuracy"] + out["shifted_val_balanced_accuracy"])
        return out

    @staticmethod
    def _describe(score: dict) -> str:
        text = f"val acc {score['val_accuracy']:.4f}"
        if "shifted_val_balanced_accuracy" in score:
            text += f", shifted val bal. acc {score['shifted_val_balanced_accuracy']:.4f}"
        return text + f", select {score['select']:.4f}"

    def _swa_add(self, swa_file: Path, k: int) -> None:
        """Fold the current weights into the running average (k = how many are already in it)."""
        import io

        now = self.model.get_weights()
        if k > 0 and swa_file.exists():
            with np.load(swa_file) as z:
                avg = [z[f"w{i}"] + (w - z[f"w{i}"]) / (k + 1) for i, w in enumerate(now)]
        else:
            avg, k = now, 0
        buf = io.BytesIO()
        np.savez(buf, count=k + 1, **{f"w{i}": w for i, w in enumerate(avg)})
        atomic.write_bytes(swa_file, buf.getvalue())

    def _set_trainable(self) -> None:
        """Top blocks + head trainable; BatchNorm layers frozen (inference mode) for stable small-batch fine-tuning."""
        keras = self.keras
        top_names = {layer.name for layer in self.top.layers}
        for layer in self.model.layers:
            layer.trainable = (layer.name in top_names
                               and not isinstance(layer, keras.layers.BatchNormalization))


def _activation_sequence(views, labels, batch_size, class_weight, rng, keras):
    """Keras Sequence over cached activations: a random augmented view per image and epoch, shuffled.
    (Built in a function because keras.utils.Sequence is only importable once TensorFlow is.)"""

    class Seq(keras.utils.Sequence):
        def __init__(self):
            super().__init__()
            n = len(labels)
            self.order = rng.permutation(n)
            self.view = rng.integers(len(views), size=n)
            self.sw = None
            if class_weight:
                self.sw = np.array([class_weight[int(c)] for c in labels], dtype=np.float32)

        def __len__(self):
            return math.ceil(len(labels) / batch_size)

        def __getitem__(self, i):
            idx = np.sort(self.order[i * batch_size:(i + 1) * batch_size])
            x = np.empty((len(idx),) + views[0].shape[1:], dtype=np.float32)
            for v in range(len(views)):
                sel = self.view[idx] == v
                if sel.any():
                    x[sel] = views[v][idx[sel]]
            y = labels[idx]
            return (x, y, self.sw[idx]) if self.sw is not None else (x, y)

    return Seq()


class _FullTrainer:
    """End-to-end fine-tuning (GPU / tf.distribute); augmentation inside the input pipeline."""

    def __init__(self, cfg: TrainConfig, run: Path, data: dict, verbose: bool):
        self.cfg, self.run_dir, self.data, self.verbose = cfg, run, data, verbose
        self.tf, self.keras = import_tf()
        self.strategy = make_strategy(cfg.distribute)
        with self.strategy.scope():
            self.model = build_model(cfg.model)
            if resolve_weights(cfg.model.weights, cfg.model.alpha) is not None:
                # Pretrained init: BatchNorm stays in inference mode (frozen statistics), as in cached mode -
                # small CPU batches would otherwise replace ImageNet's statistics with noisy PBC-only ones.
                for layer in self.model.layers:
                    if isinstance(layer, self.keras.layers.BatchNormalization):
                        layer.trainable = False
            self.model.compile(optimizer=self.keras.optimizers.Adam(cfg.learning_rate),
                               loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self.size = cfg.model.input_size

    def _dataset(self, split: str, training: bool):
        tf, cfg = self.tf, self.cfg
        paths, labels = self.data[split]
        size, aug, seed = self.size, cfg.augment, cfg.seed
        weights = _class_weights(labels) if (training and cfg.class_weights) else None

        def load(i, position):
            # `position` (Dataset.counter) restarts each epoch; with the reshuffled order it still gives an
            # image a different augmentation every epoch, deterministically for a given seed.
            i = int(i)
            rng = np.random.default_rng([seed, int(position), i]) if training else None
            return _load_pixels(paths[i], size, rng, aug).astype(np.float32)

        idx = tf.data.Dataset.range(len(paths))
        if training:
            idx = idx.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((idx, counter))

        def mapper(i, c):
            x = tf.numpy_function(load, [i, c], tf.float32)
            x.set_shape((size, size, 3))
            y = tf.gather(tf.constant(labels, dtype=tf.int64), i)
            if weights is not None:
                w = tf.gather(tf.constant([weights[k] for k in range(len(CLASSES))], dtype=tf.float32), y)
                return x, y, w
            return x, y

        ds = ds.map(mapper, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        # Under several replicas a final batch smaller than the replica count leaves one replica an empty
        # batch, which TF's CPU kernels reject: drop the remainder when training (a different subset of
        # images is dropped every epoch, because the order is reshuffled).
        drop = training and self.strategy.num_replicas_in_sync > 1
        return ds.batch(cfg.batch_size, drop_remainder=drop).prefetch(tf.data.AUTOTUNE)

    def run(self):
        cfg, keras = self.cfg, self.keras
        t = time.time()
        ckdir = self.run_dir / "checkpoints"
        ckdir.mkdir(parents=True, exist_ok=True)
        # Legacy-h5 weights: the Keras-v3 '.weights.h5' loader cannot assign into MirroredStrategy's
        # on-read (BatchNorm moving statistics) variables.
        best_w = ckdir / "best_weights.h5"
        state = _State(self.run_dir / "state.json")
        best = state.get("best_val_accuracy")
        callbacks = [
            keras.callbacks.BackupAndRestore(str(ckdir / "backup")),
            # After a resume the best value so far must carry over, or a worse epoch would overwrite it.
            keras.callbacks.ModelCheckpoint(str(best_w), monitor="val_accuracy", save_best_only=True,
                                            save_weights_only=True, initial_value_threshold=best),
            _history_callback(keras, state),
        ]
        if cfg.early_stopping:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=cfg.early_stopping))
        self.model.fit(self._dataset("train", True), validation_data=self._dataset("val", False),
                       epochs=cfg.epochs, callbacks=callbacks, verbose=1 if self.verbose else 0)
        if best_w.exists():
            self.model.load_weights(best_w)
        # fit()'s own History holds only this process's epochs; the state file has all of them.
        history = sorted(state.get("history", []), key=lambda r: r["epoch"])
        return self.model, history, [], {"train_s": round(time.time() - t, 1)}


def _history_callback(keras, state: _State):
    """Record each finished epoch (and the best val accuracy) in state.json, so that history.json and the
    curves cover every epoch even when BackupAndRestore resumed the run part-way."""

    class History(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            rec = {"phase": "full", "epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
            history = [r for r in state.get("history", []) if r["epoch"] != epoch + 1] + [rec]
            best = max([r.get("val_accuracy", -1.0) for r in history] + [-1.0])
            state.set(history=history, best_val_accuracy=best)

    return History()


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
                               "(cluster spec + this worker's task); see the README")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise WbcEdgeError(f"unknown --distribute {name!r} (none | mirrored | multiworker)")
