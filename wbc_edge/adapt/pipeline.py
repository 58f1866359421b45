"""`adapt()`: a trained model + a small labelled local folder -> an ordinary, calibrated run directory.

Why one orchestrating function: the order matters for the user.  The local folder is scanned and split before
anything heavy (a bad folder fails in a second, with nothing written); the model's labels decide which class
folders are valid; the run directory is written atomically with run.json last, so that `evaluate`, `export`
and `bench` only ever see a finished run.  The held-out images are split into `val` (fits the confidence
temperature and abstain threshold, `wbc_edge.core.calibration`; argmax is unchanged) and `test`; nothing held out is
used for training or model selection, so the held-out accuracy is an honest estimate.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core import atomic
from ..core.atomic import sha256_file
from ..core.errors import DatasetError, WbcEdgeError
from ..core.labels import Labels
from ..core.progress import Progress, resolve
from .config import AdaptConfig, AdaptResult
from .finetune import fit_top
from .interpolate import choose_alpha
from .network import ActSet, SplitNet, bottom_activations, predict_top
from .replay import default_replay, replay_pool
from .source import check_outputs, resolve_source, source_labels
from .split import HARMLESS, make_adapt_split, scan_local, split_table


def _prepare_out(run: Path, force: bool) -> None:
    if run.exists() and not run.is_dir():
        raise WbcEdgeError(f"{run}: exists and is not a directory")
    if run.exists() and any(run.iterdir()) and not force:
        what = "holds a finished run (model.keras)" if (run / "model.keras").exists() else "is not empty"
        raise WbcEdgeError(f"{run}: {what}; use --force to replace it or choose another --out")
    run.mkdir(parents=True, exist_ok=True)


def _local_split(cfg: AdaptConfig, labels: Labels, replay_root, progress: Progress):
    """Scan and split the local folder; print the split; refuse a folder that leaves < 2 classes to adapt."""
    local_root = Path(cfg.data_root)
    scan = scan_local(local_root, labels, skip_bad=cfg.skip_bad, progress=False)
    manifest = make_adapt_split(scan.records, scan.duplicates(), per_class=cfg.per_class,
                                holdout_fraction=cfg.holdout_fraction, min_holdout=cfg.min_holdout,
                                val_share=cfg.val_share, seed=cfg.seed)
    manifest.root = scan.root
    summary = manifest.summary(labels)
    adapt_classes = [c for c in labels if summary["train"][c] > 0]
    if len(adapt_classes) < 2:
        raise DatasetError(f"{local_root}: only {len(adapt_classes)} class(es) "
                           f"({', '.join(adapt_classes) or 'none'}) keep images to adapt with after holding out "
                           f"{cfg.min_holdout} per class for testing; add images (two classes at least)")
    bad = [b for b in scan.bad if b.reason not in HARMLESS]
    progress.say(f"Local images: {len(scan.records)} in {scan.root}"
                 + (f" ({len(bad)} bad files skipped, first: {bad[0].path}: {bad[0].reason})" if bad else ""))
    progress.say(f"Split (seed {cfg.seed}; "
                 + (f"{cfg.per_class} per class for adapting" if cfg.per_class else
                    f"{cfg.holdout_fraction:.0%} of each class held out")
                 + f", >= {cfg.min_holdout} held out per class; val fits the confidence calibration):")
    progress.say(split_table(manifest, labels))
    for c, n in scan.class_counts.items():
        if n == 0:
            progress.say(f"  note: no local {c} images: the class is kept by the source model"
                         + (" and replay" if replay_root else " only (no replay)"))
        elif summary["train"][c] == 0:
            progress.say(f"  note: {c}: too few images to adapt with (all held out for testing)")
    return scan, manifest, summary


def _calibrate(p_val, y_val, p_test, y_test):
    from ..core.calibration import Calibration, fit_calibration

    if len(y_val):
        cal = fit_calibration(p_val, y_val)
        cal.fitted_on = "adapt: local val split; " + cal.fitted_on
    elif len(y_test):
        cal = fit_calibration(p_test, y_test)
        cal.fitted_on = "adapt: local TEST split (no val images: too few) - optimistic; " + cal.fitted_on
    else:
        cal = Calibration(fitted_on="adapt: not fitted (no held-out images)")
    return cal


def _score_heldout(run: Path, labels: Labels, probs, y_val, y_test, cal) -> tuple[dict | None, dict]:
    """test_metrics.json (+ confusion) of the test split; the held-out (val + test) summary for run.json."""
    from ..core.calibration import apply_temperature, coverage_at, expected_calibration_error
    from ..metrics import balanced_accuracy_interval, compute_metrics, save_metrics

    names = labels.to_list()
    p_test = probs[len(y_val):]
    test_info = None
    for stale in ("test_metrics.json", "test_confusion.json", "test_confusion.png"):
        (run / stale).unlink(missing_ok=True)  # of a replaced (--force) run
    if len(y_test):
        m = compute_metrics(y_test, p_test.argmax(1), names)
        save_metrics(m, run, prefix="test_", extra={"split": "test", "n": len(y_test)})
        # The abstain threshold was fitted on val: only the test split says honestly what it accepts.
        test_info = {"accuracy": m.accuracy, "balanced_accuracy": m.balanced_accuracy, "macro_f1": m.macro_f1,
                     "accuracy_ci95": list(m.accuracy_ci95) if m.accuracy_ci95 else None,
                     "balanced_accuracy_interval95": list(balanced_accuracy_interval(y_test, p_test.argmax(1))),
                     "at_threshold": coverage_at(apply_temperature(p_test, cal.temperature), y_test,
                                                 cal.abstain_threshold)}
    y_held = np.concatenate([y_val, y_test])
    heldout = {"n": int(len(y_held))}
    if len(y_held):
        mh = compute_metrics(y_held, probs.argmax(1), names, bootstrap=0)
        scaled = apply_temperature(probs, cal.temperature)
        # The interval a few dozen images give: differences inside it (another recipe, seed or k) are noise.
        heldout.update({"accuracy": mh.accuracy, "balanced_accuracy": mh.balanced_accuracy,
                        "balanced_accuracy_interval95": list(balanced_accuracy_interval(y_held, probs.argmax(1))),
                        "per_class_recall": {r["label"]: r["recall"] for r in mh.per_class if r["support"]},
                        "ece_calibrated": expected_calibration_error(scaled, y_held),
                        "at_threshold": coverage_at(scaled, y_held, cal.abstain_threshold)})
    return test_info, heldout


def _write_history(run: Path, fit: dict, title: str, progress: Progress) -> None:
    from ..metrics import plot_curves

    hist = fit["history"]
    cols = {k: [h.get(k) for h in hist] for k in ("accuracy", "loss")}
    atomic.write_json(run / "history.json", {"epochs": hist, "phase_boundaries": fit["phase_boundaries"], **cols,
                                             "val_accuracy": [None] * len(hist), "val_loss": [None] * len(hist)})
    try:
        plot_curves(cols, run / "curves.png", title=title, phase_boundaries=fit["phase_boundaries"])
    except WbcEdgeError as exc:
        progress.say(f"(no curves.png: {exc})")


def _ci(bounds) -> str:
    return f"{100 * bounds[0]:.0f}-{100 * bounds[1]:.0f} %"


def _print_summary(progress: Progress, labels: Labels, heldout: dict, y_held, test_info, n_test, cal, run, timings):
    if heldout["n"]:
        progress.say(f"Held-out local images (val + test, n = {heldout['n']}, never used for training or "
                     f"selection): accuracy {heldout['accuracy']:.2%}, balanced accuracy "
                     f"{heldout['balanced_accuracy']:.2%} (95 % interval {_ci(heldout['balanced_accuracy_interval95'])})")
        progress.say("  recall: " + ", ".join(f"{c} {r:.0%} (n={int(np.sum(y_held == labels.index(c)))})"
                                              for c, r in heldout["per_class_recall"].items()))
    if test_info:
        at = test_info["at_threshold"]
        acc = "-" if at["accepted_accuracy"] is None else f"{at['accepted_accuracy']:.1%}"
        progress.say(f"Test split (n = {n_test}): accuracy {test_info['accuracy']:.2%}, balanced accuracy "
                     f"{test_info['balanced_accuracy']:.2%} (95 % interval {_ci(test_info['balanced_accuracy_interval95'])}); "
                     f"at the abstain threshold {at['coverage']:.0%} "
                     f"accepted, {acc} of them right")
    progress.say(f"Confidence: temperature {cal.temperature:.3f}, abstain below {cal.abstain_threshold:.3f} "
                 f"({cal.fitted_on.split(';')[0]})")
    progress.say(f"Done in {timings['total_s'] / 60:.1f} min -> {run / 'model.keras'} (export with: "
                 f"wbc-edge export {run})")


def _interpolate(cfg: AdaptConfig, net, source_weights, root, manifest, labels, progress, timings) -> dict | None:
    """WiSE-FT back towards the source, alpha chosen on source val images (`interpolate`); None when off."""
    if not cfg.interpolate or not root or cfg.source_check_images == 0:
        if cfg.interpolate:
            progress.say("Interpolation: off (no source images to check the source accuracy on)")
        return None
    t = time.time()
    try:
        paths, y, where = replay_pool(root, manifest, cfg.source_check_images, cfg.seed + 2, labels, progress,
                                      split="val" if manifest else "train")
    except DatasetError as exc:  # a split without val rows: check on (other) train images, and say so
        progress.say(f"Interpolation: {exc}; checking on train images instead")
        paths, y, where = replay_pool(root, manifest, cfg.source_check_images, cfg.seed + 2, labels, progress)
    acts = bottom_activations(net, paths, 0, cfg.augment, 0, batch_size=cfg.batch_size, progress=progress,
                              label="source check images")[0]
    choice = choose_alpha(net, source_weights, net.model.get_weights(), acts, y, cfg.alphas, cfg.max_source_drop)
    timings["interpolate_s"] = round(time.time() - t, 1)
    progress.say(f"Interpolation: alpha {choice.alpha:g} (source accuracy {choice.source_accuracy:.2%} before, "
                 f"{choice.accuracy_by_alpha[f'{choice.alpha:g}']:.2%} after, on {choice.images} images of {where})")
    return {**choice.to_dict(), "images_from": where}


def adapt(cfg: AdaptConfig, *, force: bool = False, progress: Progress | bool | None = True) -> AdaptResult:
    """Adapt cfg.source to the images in cfg.data_root; write an ordinary run directory to cfg.out_dir."""
    from ..data.run_files import load_scale_guard, save_calibration, save_scale_guard
    from ..model.network import check_classifier, load_model
    from ..core.tfcompat import import_tf, versions

    progress = resolve(progress)
    cfg.validate()
    t0 = time.time()
    timings: dict = {}
    model_path, src_run, src_info = resolve_source(cfg.source)
    labels = source_labels(src_info, src_run / "run.json" if src_run else model_path)
    if not Path(cfg.data_root).is_dir():
        raise DatasetError(f"{cfg.data_root}: local data folder not found (or not a folder)")
    replay_root, replay_manifest = default_replay(cfg, src_run, src_info)
    run = Path(cfg.out_dir)
    if run.resolve() == (src_run.resolve() if src_run else None):
        raise WbcEdgeError(f"{run}: --out must not be the source run directory")

    # The local folder and its split, then the model file (before anything heavy: a bad input fails in a second).
    t = time.time()
    scan, manifest, summary = _local_split(cfg, labels, replay_root, progress)
    timings["scan_split_s"] = round(time.time() - t, 1)
    from ..model.network import check_model_file

    check_model_file(model_path)  # a damaged or unsafe file fails before TensorFlow's start-up, not after it
    _prepare_out(run, force)

    # The model.
    progress.say(f"Loading {model_path} ...")
    import_tf()
    model = load_model(model_path)
    check_outputs(model, labels, model_path, stored=bool(src_info and src_info.get("labels")))
    check_classifier(model, model_path, labels)
    net = SplitNet.of(model, cfg.adapt_from)
    source_sha = sha256_file(model_path)
    # The source's scale guard goes with the model: the local images are adapted on, scored and (at run time)
    # fed through it, so a lab with small cells sees them magnified in all three places alike.
    guard = load_scale_guard(src_run) if src_run else None

    t = time.time()
    files = {s: manifest.files(s, scan.root, labels=labels) for s in ("train", "val", "test")}
    local, held, replay, replay_info = _activations(cfg, net, files, guard, replay_root, replay_manifest, labels,
                                                    progress)
    timings["activations_s"] = round(time.time() - t, 1)

    # Training.
    progress.say("Training ...")
    source_weights = model.get_weights()
    fit = fit_top(net, local, replay, cfg, seed=cfg.seed, progress=progress)
    timings.update(fit["timings"])
    interpolation = _interpolate(cfg, net, source_weights, replay_root, replay_manifest, labels, progress, timings)

    # Held-out scoring and confidence calibration (temperature on val, threshold on val, as fit_calibration).
    probs = predict_top(net, held)
    y_val, y_test = files["val"][1], files["test"][1]
    cal = _calibrate(probs[:len(y_val)], y_val, probs[len(y_val):], y_test)

    # Artifacts (atomic); run.json last - and first removed, so that a replaced run interrupted half-way is never
    # taken for a finished one.
    (run / "run.json").unlink(missing_ok=True)
    atomic.write_json(run / "config.json", cfg.to_dict())
    split_sha = manifest.save(run / "split.csv")
    with atomic.atomic_path(run / "model.keras") as tmp:
        model.save(tmp)
    _write_history(run, fit, f"adapt {model.name}", progress)
    test_info, heldout = _score_heldout(run, labels, probs, y_val, y_test, cal)
    save_calibration(run, cal)
    if guard is not None:
        save_scale_guard(run, guard)
    timings["total_s"] = round(time.time() - t0, 1)
    info = {
        "config": {**cfg.to_dict(), "mode": "adapt"},
        "labels": labels.to_list(),
        "versions": versions(),
        "source": {"model": str(model_path), "model_sha256": source_sha,
                   "run_dir": str(src_run) if src_run else None},
        "replay": replay_info,
        "timings": timings,
        "split_manifest_sha256": split_sha,
        "split_counts": {s: int(sum(summary[s].values())) for s in summary},
        "split_per_class": summary,
        "finetune": {"steps": fit["steps"], "local_batch": fit["local_batch"], "replay_batch": fit["replay_batch"]},
        "test": test_info,
        "heldout": heldout,
        "model_sha256": sha256_file(run / "model.keras"),
        "calibration": cal.to_dict(),
        "scale_guard": guard.to_dict() if guard else None,
        "interpolation": interpolation,
    }
    atomic.write_json(run / "run.json", info)
    _print_summary(progress, labels, heldout, np.concatenate([y_val, y_test]), test_info, len(y_test), cal, run,
                 timings)
    return AdaptResult(run, run / "model.keras", heldout, timings)


def _activations(cfg: AdaptConfig, net, files: dict, guard, replay_root, replay_manifest, labels, progress):
    """The bottom's activations the top is adapted on: every local image clean, the adapt images also in
    cfg.aug_views augmented views, and the source's replay images (when there are any).
    (local ActSet, held-out activations (val then test), replay ActSet or None, replay record or None)."""
    local = ActSet(bottom_activations(net, files["train"][0], cfg.aug_views, cfg.augment, cfg.seed,
                                      batch_size=cfg.batch_size, progress=progress, guard=guard, label="adapt images"),
                   files["train"][1])
    held = bottom_activations(net, files["val"][0] + files["test"][0], 0, cfg.augment, cfg.seed,
                              batch_size=cfg.batch_size, progress=progress, guard=guard, label="held-out images")[0]
    if not replay_root:
        progress.say("Replay: off (no source data given or found in the source run); the source domain may be "
                     "forgotten")
        return local, held, None, None
    rpaths, ry, where = replay_pool(replay_root, replay_manifest, cfg.replay_images, cfg.seed, labels, progress)
    progress.say(f"Replay: {len(rpaths)} source images from {where}")
    replay = ActSet(bottom_activations(net, rpaths, cfg.replay_views, cfg.augment, cfg.seed + 1,
                                       batch_size=cfg.batch_size, progress=progress, guard=guard,
                                       label="replay images"), ry)
    replay_info = {"data_root": str(replay_root), "split_manifest": replay_manifest, "images": len(rpaths),
                   "per_class": {c: int(np.sum(ry == i)) for i, c in enumerate(labels)}}
    if replay_manifest:
        replay_info["split_manifest_sha256"] = sha256_file(replay_manifest)
    return local, held, replay, replay_info
