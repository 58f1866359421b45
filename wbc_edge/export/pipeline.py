"""`export_model`: a trained Keras model -> checked, self-describing TFLite files + manifest.json.

    from wbc_edge.export import ExportConfig, export_model
    result = export_model(ExportConfig("runs/r1", variants=("float32", "int8"), android_dir="android_assets"))
    result.manifest["variants"]        # per file: bytes, sha256, parity, status, stage of a failure

The order of work: check every input (inputs.py) -> load the model, decide its labels -> preprocess the
calibration and parity pixels once -> each chosen variant in registry order (variant_export.py) -> remove
stale files -> Android bundle -> manifest.json.  A variant that fails keeps what it measured; its entry
names the stage.  Files whose gate failed are kept (one that failed before writing has none: a previous
export's file of it is removed), manifest.json marks them "failed", and `export_model` raises
`ExportFailed` (CLI: exit status 1) after writing it.

Determinism: for the same source model, split manifest, data and library versions on the same machine,
float32 / float16 / dynamic / int8 files are byte-identical across runs (the calibration sample is seeded
and the converter is deterministic for a fixed representative dataset; checked across processes).  qat_int8
is seeded and came out identical in our re-runs as well, but that is not guaranteed: the fine-tune runs
multi-threaded float reductions.  The embedded contract records library versions and the platform, so files
built on different machines differ in those trailing bytes even when the flatbuffers are equal - compare
`flatbuffer_sha256` in manifest.json for that.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from ..core.atomic import sha256_file
from ..core.errors import DatasetError, ModelFileError
from ..core.preprocess import PREPROCESS_VERSION
from ..core.progress import Progress, resolve
from . import parity, stages
from . import variants as registry
from .android import write_android_bundle
from .calibration_data import calibration_info, sample_pixels
from .config import ExportConfig, ExportFailed, ExportResult
from .inputs import ExportInputs, guard_outputs, resolve_inputs, resolve_labels, select_variants
from .manifest import DETERMINISM_NOTE, MANIFEST_FORMAT, MANIFEST_NAME, write_manifest
from .variant_export import ExportJob, export_variant

CONVERTER_NOTE = "tf.lite.TFLiteConverter.from_saved_model (SavedModel from tf_keras Model.export)"


def source_warnings(inp: ExportInputs, model_sha: str, split_sha: str) -> list[str]:
    """Mismatches between what run.json recorded and what is exported now.  The split is compared by its
    canonical sha256 (SplitManifest.sha256: sorted rows, '\\n' line ends), so a CRLF or re-sorted copy of
    the same split is not reported."""
    out = []
    rec = (inp.run_info or {}).get("model_sha256")
    if rec and rec != model_sha:
        out.append(f"{inp.model_path.name} sha256 differs from run.json's model_sha256 (model replaced after "
                   "training?)")
    rec = (inp.run_info or {}).get("split_manifest_sha256")
    if rec and rec != split_sha:
        out.append(f"{inp.split_path.name} sha256 differs from run.json's split_manifest_sha256")
    return out


def _load_model(path: Path):
    from ..model.network import load_model
    from ..core.tfcompat import import_tf

    import_tf()
    model = load_model(path)
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        raise ModelFileError(f"{path}: expected input (None, S, S, 3), got {shape}")
    return model, int(shape[1]), int(model.output_shape[-1])


def export_model(cfg: ExportConfig, progress: Progress | bool | None = None) -> ExportResult:
    """Convert, embed contracts, check parity, write manifest.json (and the Android bundle); see module doc.

    Raises WbcEdgeError for unusable inputs (before anything is written) and ExportFailed - after writing
    every file and manifest.json - when a variant failed at any stage.  `progress`: a
    `wbc_edge.core.progress.Progress` (default: plain lines on stderr when cfg.verbose, else silent).
    """
    progress = resolve(cfg.verbose if progress is None else progress)
    say = progress.say
    t_start = time.perf_counter()
    specs = select_variants(cfg)
    inp = resolve_inputs(cfg)
    guard_outputs(inp, cfg.force)
    from ..model.network import check_model_file

    check_model_file(inp.model_path)  # a damaged or unsafe file fails before TensorFlow's start-up

    from ..data import SplitManifest

    split = SplitManifest.load(inp.split_path)
    split_sha = split.sha256()  # canonical: the hash `wbc-edge train` records
    split.verify(inp.data_root)
    model_sha = sha256_file(inp.model_path)
    warnings = source_warnings(inp, model_sha, split_sha)
    for w in warnings:
        say(f"Warning: {w}")

    from ..core.tfcompat import versions
    from ..data.run_files import load_calibration, load_scale_guard

    say(f"Loading {inp.model_path} ...")
    model, size, n_out = _load_model(inp.model_path)
    labels, labels_origin = resolve_labels(cfg, inp, n_out)
    vers = versions()
    cal_pixels, cal_info = _calibration_set(cfg, inp, split, specs, labels, size, say)
    guard = load_scale_guard(inp.model_path.parent)  # scale_guard.json beside model.keras, if fitted
    ref, n_parity = _parity_reference(cfg, inp, split, model, size, labels, guard, say)
    domains = parity.domains(cfg, model, size, labels, say, guard)

    out = inp.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # an interrupted export must not leave a stale manifest
    confidence = load_calibration(inp.model_path.parent)  # calibration.json beside model.keras, if fitted
    base_contract = dict(labels=list(labels), input_size=size, preprocess=PREPROCESS_VERSION,
                         source_model_sha256=model_sha, split_manifest_sha256=split_sha, versions=vers,
                         temperature=confidence.temperature if confidence else None,
                         abstain_threshold=confidence.abstain_threshold if confidence else None,
                         scale_guard=guard.to_dict() if guard else None)
    job = ExportJob(cfg, model, size, labels, base_contract, cal_pixels, ref, domains, out, None,
                    cfg.num_threads or min(4, os.cpu_count() or 1), progress,
                    qat_train=split.files("train", inp.data_root, labels=labels) if any(s.qat for s in specs)
                    else None)
    entries, files = _export_variants(specs, job, say)
    _remove_stale(out, files, say)
    android = None
    if inp.android_dir is not None:
        android = write_android_bundle(inp.android_dir, specs, entries, files, say)
    record = {  # what the manifest says about the source, known before any conversion
        "source_model": {"path": str(inp.model_path), "sha256": model_sha, "input_size": size,
                         "params": int(model.count_params())},
        "split_manifest": {"path": str(inp.split_path), "sha256": split_sha,
                           "file_sha256": sha256_file(inp.split_path)},
        "data_root": str(inp.data_root),
        "labels": list(labels),
        "labels_source": labels_origin,
        "preprocess": PREPROCESS_VERSION,
        "versions": vers,
        "converter": CONVERTER_NOTE,
        "calibration": cal_info,
        "confidence": confidence.to_dict() if confidence else None,
        "scale_guard": guard.to_dict() if guard else None,
        "parity_reference": {"split": cfg.parity_split, "n": n_parity, "limit": cfg.parity_limit,
                             "keras_accuracy": ref.accuracy, "interpreter_threads": job.num_threads},
        "parity_domains": {name: {"n": int(len(d.labels)), "keras_accuracy": d.accuracy}
                           for name, d in domains.items()},
    }
    bundle = inp.android_dir if android is not None and android.get("status") == "ok" else None
    return _finish(cfg, out, record, entries, files, android, bundle, warnings, t_start, say)


def _calibration_set(cfg: ExportConfig, inp, split, specs, labels, size: int, say):
    """(calibration pixels, their manifest record), or (None, None) when no variant needs calibrating."""
    if not any(s.needs_calibration for s in specs):
        return None, None
    cpaths, clabels = split.files(cfg.calibration_split, inp.data_root, labels=labels)
    if not cpaths:
        raise DatasetError(f"{inp.split_path}: split '{cfg.calibration_split}' is empty (calibration)")
    t = time.perf_counter()
    cal_pixels, cal_y, n_aug = sample_pixels(cpaths, clabels, cfg.calibration_size, size, cfg.seed,
                                             augment_preset=cfg.calibration_augment,
                                             augmented_fraction=cfg.calibration_augmented_fraction)
    cal_info = calibration_info(cfg.calibration_split, cal_y, list(labels), cfg.seed, n_aug,
                                cfg.calibration_augment, cfg.calibration_transform)
    say(f"Calibration: {len(cal_y)} images from the '{cfg.calibration_split}' split "
        f"({time.perf_counter() - t:.1f} s to preprocess)")
    return cal_pixels, cal_info


def _parity_reference(cfg: ExportConfig, inp, split, model, size: int, labels, guard, say):
    """The Keras model's outputs on the parity split (a stratified subset with --parity-limit), fed through
    its scale guard as the runtime feeds the files; (reference, number of images)."""
    from ..data import stratified_indices

    ppaths, plabels = split.files(cfg.parity_split, inp.data_root, labels=labels)
    if not ppaths:
        raise DatasetError(f"{inp.split_path}: split '{cfg.parity_split}' is empty (parity)")
    pidx = stratified_indices(plabels, cfg.parity_limit, cfg.seed)
    t = time.perf_counter()
    ref = parity.reference(model, [ppaths[i] for i in pidx], plabels[pidx], size, cfg.batch_size, guard)
    say(f"Keras reference on {len(pidx)} '{cfg.parity_split}' images: accuracy {ref.accuracy:.2%} "
        f"({time.perf_counter() - t:.1f} s)")
    return ref, int(len(pidx))


def _export_variants(specs, job: ExportJob, say) -> tuple[list[dict], dict[str, Path]]:
    """Every variant through its stages; a failure is recorded in its manifest entry, the others go on."""
    entries: list[dict] = []
    files: dict[str, Path] = {}
    job.tmp_dir = Path(tempfile.mkdtemp(prefix="wbc_export_"))
    try:
        for spec in specs:
            entry: dict = {"variant": spec.name, "file": spec.file, "status": "ok", "stage": None,
                           "reason": None, "converter": spec.converter_settings()}
            if spec.options:
                entry["options"] = dict(spec.options)
            entries.append(entry)
            try:
                export_variant(spec, job, entry, files)
            except stages.StageFailed as exc:
                entry["status"], entry["stage"], entry["reason"] = "failed", exc.stage, str(exc)
                if exc.stage != stages.GATE:
                    say(f"[{spec.name}] FAILED: {exc}")
    finally:
        shutil.rmtree(job.tmp_dir, ignore_errors=True)
    return entries, files


def _finish(cfg: ExportConfig, out: Path, record: dict, entries: list[dict], files: dict[str, Path], android,
            bundle, warnings: list[str], t_start: float, say) -> ExportResult:
    """manifest.json (written last: its presence means the export finished), then the result - or
    ExportFailed naming every failed variant, after everything is written."""
    failed = [e for e in entries if e["status"] != "ok"]
    manifest = {"format": MANIFEST_FORMAT, "status": "failed" if failed else "ok", **record,
                "variants": entries, "android": android, "warnings": warnings, "determinism": DETERMINISM_NOTE,
                "config": cfg.to_dict(), "total_seconds": round(time.perf_counter() - t_start, 1)}
    manifest_path = write_manifest(out / MANIFEST_NAME, manifest)
    result = ExportResult(out, manifest_path, manifest, files, bundle, ok=not failed)
    say(f"Wrote {manifest_path} ({len(entries) - len(failed)}/{len(entries)} variants ok, "
        f"{manifest['total_seconds']:.0f} s)")
    if failed:
        detail = "; ".join(f"{e['variant']} failed at {e['stage']} ({e['reason']})" for e in failed)
        raise ExportFailed(f"{len(failed)} of {len(entries)} variant(s) failed: {detail}; files kept, see "
                           f"{manifest_path}", result)
    return result


def _remove_stale(out: Path, files: dict[str, Path], say) -> None:
    """Files this run did not write would contradict the manifest: remove them (force only).  That covers
    registered variants not selected and variants that failed before their file was written."""
    stale = [s.file for s in registry.specs() if s.name not in files and (out / s.file).exists()]
    for name in stale:
        (out / name).unlink()
    if stale:
        say(f"Removed stale {', '.join(stale)} from a previous export")
