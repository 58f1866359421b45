"""`train()`: one training run from a config to a finished RUN_DIR, in order.

validate the config -> (multi-worker: pick this process's folder) -> create or resume RUN_DIR, settle the
split and the class list (`run_dir`) -> load the splits (`inputs`) -> the trainer of the mode (`cached` /
`full`) -> the final artifacts, each written atomically: split.csv, model.keras, history.json, curves.png,
the test metrics of the saved model, calibration.json, feature_distance.npz and, last, run.json (the run is finished when run.json
exists and the pending split is gone).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from ..core import atomic
from ..core.atomic import sha256_file
from ..calibrate.confidence import FEATURE_DISTANCE_SAMPLE, fit_run_feature_distance, fit_split_scale_guard
from ..data.run_files import save_calibration, save_scale_guard
from ..core.errors import WbcEdgeError
from ..calibrate.feature_distance import FEATURE_DISTANCE_FILE
from ..core.progress import Progress, resolve
from ..core.tfcompat import import_tf, versions
from .cached import CachedTrainer
from .config import TrainConfig, TrainResult
from .distribute import worker_out_dir, worker_role
from .full import FullTrainer
from .inputs import load_splits
from .run_dir import PENDING_SPLIT, prepare_run
from ..data.augment import shifted_val_pixels


def train(cfg: TrainConfig, *, force: bool = False, progress: Progress | bool | None = True) -> TrainResult:
    """Train according to `cfg`, writing everything into cfg.out_dir (see the package docstring).

    `progress`: a `wbc_edge.core.progress.Progress` (the CLI passes its click one), True for plain lines on
    stderr, False for none."""
    progress = resolve(progress)
    cfg.validate()
    if cfg.distribute == "multiworker":
        chief, index = worker_role()
        if not chief:
            # Only the chief writes RUN_DIR; the other workers keep their (identical) copies in a scratch
            # directory inside it, so that nothing races on the same files.
            cfg = dataclasses.replace(cfg, out_dir=worker_out_dir(cfg.out_dir, index))
    t0 = time.time()
    run, manifest, resumed, cfg, labels = prepare_run(cfg, force=force, progress=progress)
    split_src = cfg.split_manifest or run / PENDING_SPLIT
    data = load_splits(manifest, cfg, labels, str(split_src))
    tf, keras = import_tf()
    keras.utils.set_random_seed(cfg.seed)
    trainer = (CachedTrainer if cfg.mode == "cached" else FullTrainer)(cfg, run, data, progress)
    model, history, phase_bounds, timings = trainer.run()

    # Final artifacts (atomic).  The reference model is the best-validation checkpoint.
    from ..metrics import compute_metrics, plot_curves, save_metrics
    from ..model.scoring import predict_keras

    # split.csv first: from here on the artifacts belong to the new model (the pending split, removed last,
    # keeps the run marked unfinished until run.json is written).
    manifest.save(run / "split.csv")  # canonical bytes: the file hashes to the sha256 run.json records
    with atomic.atomic_path(run / "model.keras") as tmp:
        model.save(tmp)
    hist_cols = history_columns(history)
    atomic.write_json(run / "history.json", {"epochs": history, "phase_boundaries": phase_bounds, **hist_cols})
    try:
        plot_curves(hist_cols, run / "curves.png", title=f"{model.name} ({cfg.mode} mode)",
                    phase_boundaries=phase_bounds)
    except WbcEdgeError as exc:
        progress.say(f"(no curves.png: {exc})")

    t_guard = time.time()
    guard = _fit_scale_guard(run, data, cfg, progress)
    timings["scale_guard_s"] = round(time.time() - t_guard, 1)

    # Score the test split with the saved full model on the one preprocessing path (+ the scale guard), exactly
    # as `wbc-edge evaluate`, the runtime and export's parity check will (not from the float16 activation cache).
    t_eval = time.time()
    probs = predict_keras(model, data["test"][0], batch_size=cfg.batch_size, progress=False, guard=guard)
    y_true = data["test"][1]
    metrics = compute_metrics(y_true, probs.argmax(1), labels)
    save_metrics(metrics, run, prefix="test_", extra={"split": "test", "n": len(y_true)})
    timings["test_eval_s"] = round(time.time() - t_eval, 1)
    per_source = per_source_metrics(trainer, model, data, cfg, labels, probs)
    calibration = fit_run_calibration(trainer, model, data, cfg)
    save_calibration(run, calibration)
    progress.say(f"Confidence: temperature {calibration.temperature:.3f} (val ECE {calibration.ece_before:.3f} -> "
                 f"{calibration.ece_after:.3f}), abstain below {calibration.abstain_threshold:.3f}")
    t_fd = time.time()
    _fit_feature_distance(run, model, data, guard, progress)
    timings["feature_distance_s"] = round(time.time() - t_fd, 1)
    timings["total_s"] = round(time.time() - t0, 1)
    run_info = {
        "config": cfg.to_dict(),
        "labels": labels.to_list(),
        "versions": versions(),
        "timings": timings,
        "split_manifest_sha256": manifest.sha256(),
        "split_counts": {s: len(data[s][0]) for s in data},
        "resumed": resumed,
        "test": {"accuracy": metrics.accuracy, "balanced_accuracy": metrics.balanced_accuracy,
                 "macro_f1": metrics.macro_f1, "accuracy_ci95": list(metrics.accuracy_ci95)},
        "model_sha256": sha256_file(run / "model.keras"),
        "calibration": calibration.to_dict(),
        "scale_guard": guard.to_dict() if guard else None,
    }
    if per_source is not None:
        run_info["sources"] = per_source
    atomic.write_json(run / "run.json", run_info)
    (run / PENDING_SPLIT).unlink(missing_ok=True)  # the run is finished
    progress.say(metrics.format_table())
    progress.say(f"Done in {timings['total_s'] / 60:.1f} min -> {run / 'model.keras'}")
    return TrainResult(run, run / "model.keras", metrics.accuracy, history, timings, labels.to_list())


def _fit_scale_guard(run, data: dict, cfg: TrainConfig, progress):
    """The run's scale guard from its train split (RUN_DIR/scale_guard.json), or None when too few train images
    show a nucleus to fit one."""
    try:
        guard = fit_split_scale_guard(data["train"][0], data["train"][1], cfg.model.input_size)
    except ValueError as exc:  # too few train images with a visible nucleus: the model simply has no guard
        progress.say(f"Scale guard: not fitted ({exc})")
        return None
    save_scale_guard(run, guard)
    progress.say(f"Scale guard: zoom in when the nucleus is under {guard.threshold:.3f} of the side "
                 f"(to {guard.target:.3f}, at most {guard.max_zoom:g}x)")
    return guard


def _fit_feature_distance(run, model, data: dict, guard, progress) -> None:
    """RUN_DIR/feature_distance.npz (what crossdomain's "far from the training data" reads), when the train
    split is large enough for its subspace."""
    try:
        fd = fit_run_feature_distance(model, data["train"][0], data["train"][1], data["val"][0], guard)
    except ValueError as exc:  # too few train images for the subspace: the run simply has no feature distance
        progress.say(f"Feature distance: not fitted ({exc})")
        return
    fd.save(run / FEATURE_DISTANCE_FILE)
    progress.say(f"Feature distance: fitted on {min(len(data['train'][1]), FEATURE_DISTANCE_SAMPLE)} train "
                 f"images; {100 * fd.quantile:.0f} % of val within {fd.cut:.1f} (crossdomain reports the share "
                 "of a domain beyond it)")


def per_source_metrics(trainer, model, data: dict, cfg: TrainConfig, labels, test_probs) -> dict | None:
    """{source: {"val": {...}, "test": {...}}} of a several-lab run (accuracy, balanced accuracy, macro-F1, n,
    per-class recall), None for one lab: what each lab's share of the model is worth, on its own cells."""
    if not cfg.sources:
        return None
    from ..metrics import compute_metrics
    from ..model.scoring import predict_keras
    from .inputs import source_ids

    val_probs = getattr(trainer, "val_probs", None)
    val_probs = val_probs[0] if val_probs else predict_keras(model, data["val"][0], batch_size=cfg.batch_size,
                                                             progress=False)
    out: dict = {}
    for split, probs in (("val", val_probs), ("test", test_probs)):
        paths, y = data[split]
        src = source_ids(paths, cfg)
        for i, s in enumerate(cfg.sources):
            sel = src == i
            if not sel.any():
                continue
            m = compute_metrics(y[sel], probs[sel].argmax(1), labels, bootstrap=0)
            out.setdefault(s["name"], {"root": s["root"]})[split] = {
                "n": int(sel.sum()), "accuracy": m.accuracy, "balanced_accuracy": m.balanced_accuracy,
                "macro_f1": m.macro_f1, "recall": {r["label"]: r["recall"] for r in m.per_class if r["support"]}}
    return out


def fit_run_calibration(trainer, model, data: dict, cfg: TrainConfig):
    """Temperature on clean val, abstain threshold on shifted val (see wbc_edge.core.calibration)."""
    from ..core.calibration import fit_calibration
    from ..model.scoring import predict_keras

    y_val = data["val"][1]
    probs = getattr(trainer, "val_probs", None)
    if not probs:  # full mode: no activation cache, run the model
        probs = [predict_keras(model, data["val"][0], batch_size=cfg.batch_size, progress=False)]
        if cfg.shifted_val:
            px = shifted_val_pixels(data["val"][0], cfg.model.input_size).astype(np.float32)
            probs.append(model.predict(px, batch_size=cfg.batch_size, verbose=0))
    shifted = probs[1] if len(probs) > 1 else None
    return fit_calibration(probs[0], y_val, shifted, y_val if shifted is not None else None)


def history_columns(history: list[dict]) -> dict:
    """history.json's per-metric columns (None where an epoch has no such value), as the curves plot them."""
    cols: dict[str, list] = {}
    for key in ("accuracy", "val_accuracy", "loss", "val_loss"):
        cols[key] = [float(h[key]) if h.get(key) is not None else None for h in history]
    return cols
