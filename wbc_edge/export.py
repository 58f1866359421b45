"""Export a reference Keras model to self-describing TFLite files, checked against Keras at export time.

    from wbc_edge.export import ExportConfig, export_model
    result = export_model(ExportConfig("runs/r1", variants=("float32", "int8"), android_dir="android_assets"))
    result.manifest["variants"]        # per file: bytes, sha256, parity, status

Variants (file `wbc_<variant>.tflite` in the output folder):
- float32   - the graph as trained.
- float16   - weights stored as float16 (float32 compute / I/O).
- dynamic   - dynamic-range: int8 weights, float activations, float32 I/O.
- int8      - full-integer post-training quantisation.  Calibration: a stratified, seeded sample of the
              TRAIN split through `wbc_edge.preprocess.preprocess` (the training pixels).  I/O is **uint8**:
              the input takes raw RGB pixels (scale exactly 1.0, zero point 0 - guaranteed by putting a 0
              and a 255 pixel into the first calibration image, and verified after conversion), which is
              exactly what an Android Bitmap / camera frame holds; the output is uint8 probabilities
              (scale 1/256).
- qat_int8  - tfmot quantization-aware fine-tune (see `wbc_edge.export_qat`), then the same full-integer
              uint8 conversion.

Every file carries a `wbc_edge.contract.ModelContract` (labels, input size, dtypes, quantisation read back
from the converted model, preprocess version, source model / split sha256, library versions) and the
standard TFLite metadata (`wbc_edge.tflite_metadata`: labels file, RGB input, normalisation), so MediaPipe
Tasks ImageClassifier takes it as it is.  `flatbuffer_sha256` in manifest.json is the flatbuffer with that
metadata (the file minus the contract zip).  Conversion
uses `model.export(dir)` + `TFLiteConverter.from_saved_model` (5-10x faster than from_keras_model).

Parity gate: each file is run with the TFLite interpreter on the parity split (default: test) and compared
with the Keras model on the same pixels.  int8 variants fail when accuracy drops by more than
`max_int8_drop` percentage points or top-1 agreement is below `min_int8_agreement` %; float variants fail
below `min_float_agreement` % agreement.  A variant that fails its gate keeps its file (one whose conversion
fails has none: a previous export's file of it is removed), `manifest.json` marks it "failed" with the
reason, and `export_model` raises `ExportFailed` (CLI: exit status 1) after writing it.

Determinism: for the same source model, split manifest, data and library versions on the same machine,
float32 / float16 / dynamic / int8 files are byte-identical across runs (the calibration sample is seeded
and the converter is deterministic for a fixed representative dataset; checked across processes).  qat_int8
is seeded and came out identical in our re-runs as well, but that is not guaranteed: the fine-tune runs
multi-threaded float reductions.  The embedded contract records library versions and the
platform, so files built on different machines differ in those trailing bytes even when the flatbuffers
are equal - compare `flatbuffer_sha256` in manifest.json for that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import atomic
from .atomic import sha256_file
from .classes import CLASSES
from .contract import ModelContract, embed_contract
from .errors import DatasetError, ModelFileError, WbcEdgeError, first_line
from .export_android import bundle_metadata, check_android_bundle, tensor_details, write_bundle
from .preprocess import PREPROCESS_VERSION, preprocess_batch
from .tflite_metadata import add_standard_metadata, metadata_summary
from .sampling import stratified_indices

__all__ = ["ExportConfig", "ExportResult", "ExportFailed", "export_model", "VARIANTS", "DEFAULT_VARIANTS",
           "INT8_VARIANTS", "variant_file", "stratified_indices", "check_android_bundle", "MANIFEST_NAME"]

VARIANTS = ("float32", "float16", "dynamic", "int8", "qat_int8")
DEFAULT_VARIANTS = ("float32", "float16", "int8")
INT8_VARIANTS = ("int8", "qat_int8")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

DETERMINISM_NOTE = ("float32/float16/dynamic/int8 are byte-identical across re-runs with the same inputs and "
                    "library versions on the same machine (seeded calibration sample, deterministic "
                    "converter). "
                    "qat_int8 is seeded and was identical in our re-runs too, but is not guaranteed to be "
                    "(multi-threaded float training). The embedded contract records versions and platform: "
                    "compare flatbuffer_sha256 across machines.")


def variant_file(variant: str) -> str:
    """The file name of a variant: wbc_<variant>.tflite."""
    return f"wbc_{variant}.tflite"


class ExportFailed(WbcEdgeError):
    """One or more variants failed (parity gate or conversion); the files and manifest.json were written.

    `result` is the ExportResult (manifest included)."""

    def __init__(self, message: str, result: ExportResult):
        super().__init__(message)
        self.result = result


@dataclass
class ExportConfig:
    """What `export_model` does.  Paths may be str or Path.

    source: a run directory (model.keras + split.csv + run.json) or a .keras file (split.csv / run.json are
        then looked for beside it).
    out_dir: where the .tflite files and manifest.json go (default: <run dir>/export).
    data_root: the ImageFolder root the split manifest's relative paths refer to (default: config.data_root
        of run.json).
    split_manifest: split CSV (default: split.csv beside the model).
    """

    source: str | os.PathLike
    out_dir: str | os.PathLike | None = None
    variants: Sequence[str] = DEFAULT_VARIANTS
    data_root: str | os.PathLike | None = None
    split_manifest: str | os.PathLike | None = None
    calibration_size: int = 300           # representative images for int8 PTQ (and QAT range init)
    calibration_split: str = "train"
    #: Augmentation preset (wbc_edge.augment) applied to a share of the calibration and QAT images, so the
    #: int8 ranges cover other labs' pixels too, not only clean PBC (None: clean images only).
    calibration_augment: str | None = "robust"
    calibration_augmented_fraction: float = 0.5
    #: Extra labelled ImageFolder roots ("ROOT" or "NAME=ROOT") on which every variant must also agree with
    #: the Keras model (same agreement thresholds; all images, clean).
    parity_domains: Sequence[str] = ()
    #: Agreement (%) every variant needs on each parity domain; None = the variant's own thresholds above
    #: (min_int8_agreement / min_float_agreement); 0 = measure and record, do not gate.
    min_domain_agreement: float | None = None
    parity_split: str = "test"
    parity_limit: int | None = None       # stratified subset of the parity split; None = all of it
    max_int8_drop: float = 1.0            # percentage points of accuracy an int8 variant may lose
    min_int8_agreement: float = 98.0      # % top-1 agreement with Keras, int8 variants
    min_float_agreement: float = 99.0     # % top-1 agreement with Keras, float32/float16/dynamic
    qat_epochs: int = 2                   # 2 x 2048 beat 1 x 512 on PBC: -0.05 vs -0.15 pp (about 3 min here)
    qat_images: int = 2048                # stratified subset of the train split for the QAT fine-tune
    qat_batch_size: int = 16
    qat_learning_rate: float = 1e-5
    save_qat_model: bool = False          # also write qat_model.h5 (tfmot Keras model, load with qat_scope)
    android_dir: str | os.PathLike | None = None  # write the Android bundle here (None = no bundle)
    force: bool = False                   # allow a non-empty out_dir / existing bundle files
    seed: int = 42
    num_threads: int | None = None        # interpreter threads for parity (None: min(4, CPUs))
    batch_size: int = 32                  # Keras reference / calibration batch
    verbose: bool = True
    #: Testing hook: applied to the final float32 calibration batch (N, S, S, 3), e.g. `lambda x: x / 255`
    #: to simulate a broken calibration (pixels in [0, 1] instead of 0..255).  Recorded in the manifest.
    calibration_transform: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False,
                                                                            compare=False)

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "calibration_transform":
                v = None if v is None else getattr(v, "__name__", "custom")
            elif isinstance(v, os.PathLike):
                v = str(v)
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out


@dataclass
class ExportResult:
    out_dir: Path
    manifest_path: Path
    manifest: dict
    files: dict[str, Path]  # variant -> .tflite path (failed parity included, failed conversion not)
    android_dir: Path | None = None
    ok: bool = True

    @property
    def failed(self) -> list[str]:
        return [v["variant"] for v in self.manifest["variants"] if v["status"] != "ok"]


# --------------------------------------------------------------------------------------------- helpers

def check_input_quantisation(input_details: dict) -> str | None:
    """None when a uint8 input takes raw pixels (scale exactly 1.0, zero point 0), else the problem."""
    dtype = np.dtype(input_details["dtype"])
    scale, zp = input_details["quantization"]
    if dtype != np.uint8 or float(scale) != 1.0 or int(zp) != 0:
        return (f"input is {dtype.name} with scale {float(scale)!r}, zero point {int(zp)}; expected uint8 "
                "raw pixels (scale 1.0, zero point 0) - the calibration data must span 0..255")
    return None


def _quant_or_none(details: dict) -> tuple[float | None, int | None]:
    scale, zp = details["quantization"]
    if np.dtype(details["dtype"]) == np.float32 and float(scale) == 0.0:
        return None, None
    return float(scale), int(zp)


class _Predictor:
    """Runs a .tflite file on uint8 pixels -> float32 probabilities (wbc_edge.runtime.Classifier)."""

    def __init__(self, path: Path, num_threads: int | None):
        from .runtime import Classifier

        self._clf = Classifier(path, num_threads=num_threads)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return self._clf.predict_pixels(pixels)


# --------------------------------------------------------------------------------------------- resolving

@dataclass
class _Inputs:
    model_path: Path
    run_dir: Path
    run_info: dict | None
    split_path: Path
    data_root: Path
    out_dir: Path
    android_dir: Path | None


def _resolve(cfg: ExportConfig) -> _Inputs:
    src = Path(cfg.source).expanduser()
    if src.is_dir():
        model_path = src / "model.keras"
        if not model_path.is_file():
            raise ModelFileError(f"{src}: not a run directory (no model.keras); pass RUN_DIR or a .keras "
                                 "file")
        run_dir = src
    elif src.is_file():
        model_path, run_dir = src, src.parent
    else:
        raise ModelFileError(f"{src}: not found (expected RUN_DIR or a .keras model file)")
    run_info = None
    run_json = run_dir / "run.json"
    if run_json.is_file():
        try:
            run_info = json.loads(run_json.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{run_json}: not valid JSON ({exc})") from None
    split_path = Path(cfg.split_manifest).expanduser() if cfg.split_manifest else run_dir / "split.csv"
    if not split_path.is_file():
        raise DatasetError(f"{split_path}: split manifest not found; pass --split-manifest CSV "
                           f"(calibration uses its '{cfg.calibration_split}' split, parity its "
                           f"'{cfg.parity_split}' split)")
    if cfg.data_root:
        data_root, origin = Path(cfg.data_root).expanduser(), "--data"
    else:
        recorded = ((run_info or {}).get("config") or {}).get("data_root")
        if not recorded:
            raise DatasetError(f"no data root: pass --data ROOT (the ImageFolder the paths in "
                               f"{split_path.name} refer to); {run_json} has no config.data_root")
        data_root, origin = Path(recorded).expanduser(), f"config.data_root of {run_json}"
    if not data_root.is_dir():
        raise DatasetError(f"{data_root}: data root not found (from {origin}); pass --data ROOT")
    out_dir = Path(cfg.out_dir).expanduser() if cfg.out_dir else run_dir / "export"
    android = Path(cfg.android_dir).expanduser() if cfg.android_dir else None
    return _Inputs(model_path, run_dir, run_info, split_path, data_root, out_dir, android)


def _validate(cfg: ExportConfig) -> list[str]:
    variants = list(dict.fromkeys([cfg.variants] if isinstance(cfg.variants, str) else cfg.variants))
    if not variants:
        raise WbcEdgeError("no variants selected")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise WbcEdgeError(f"unknown variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})")
    splits = ("train", "val", "test")
    if cfg.parity_split not in splits or cfg.calibration_split not in splits:
        raise WbcEdgeError(f"splits must be one of {', '.join(splits)}")
    if not 0.0 <= cfg.calibration_augmented_fraction <= 1.0:
        raise WbcEdgeError(f"--calibration-augmented-fraction must be in [0, 1], got "
                           f"{cfg.calibration_augmented_fraction}")
    if cfg.calibration_augment is not None:
        from .augment import preset

        preset(cfg.calibration_augment)  # an unknown name fails before anything is converted
    for spec in cfg.parity_domains:
        if not Path(_domain_root(spec)).is_dir():
            raise WbcEdgeError(f"--parity-data {spec}: not a directory (expected an ImageFolder root or NAME=ROOT)")
    if cfg.calibration_size < 1:
        raise WbcEdgeError(f"--calibration-size must be >= 1, got {cfg.calibration_size}")
    if cfg.parity_limit is not None and cfg.parity_limit < 1:
        raise WbcEdgeError(f"--parity-limit must be >= 1, got {cfg.parity_limit}")
    if "qat_int8" in variants and (cfg.qat_epochs < 1 or cfg.qat_images < 1):
        raise WbcEdgeError("--qat-epochs and --qat-images must be >= 1")
    if cfg.android_dir is not None and not any(v in INT8_VARIANTS for v in variants):
        raise WbcEdgeError("--android needs an int8 variant (--int8 and/or --qat)")
    return [v for v in VARIANTS if v in variants]  # canonical order


def _guard_outputs(inp: _Inputs, force: bool) -> None:
    out = inp.out_dir
    if out.exists() and not out.is_dir():
        raise WbcEdgeError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise WbcEdgeError(f"{out}: output directory is not empty; use --force to overwrite, or choose --out")
    if inp.android_dir is not None and not force:
        from .export_android import BUNDLE_FILES

        existing = [n for n in BUNDLE_FILES if (inp.android_dir / n).exists()]
        if existing:
            raise WbcEdgeError(f"{inp.android_dir}: already holds {', '.join(existing)}; use --force to "
                               "overwrite")


# --------------------------------------------------------------------------------------------- conversion

def _saved_model(model, directory: Path) -> None:
    """model.export (the fast path); its chatty signature listing goes to a buffer, not the console."""
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(directory))


def _convert(saved_model_dir: Path, variant: str, calibration: np.ndarray | None) -> bytes:
    from .tfcompat import import_tf

    tf, _ = import_tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if variant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant in INT8_VARIANTS:
        assert calibration is not None

        def representative():
            for i in range(len(calibration)):
                yield [calibration[i:i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    elif variant != "float32":
        raise ValueError(variant)
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(conv.convert())


def _domain_root(spec: str) -> str:
    name, sep, root = str(spec).partition("=")
    return root if sep else name


def _domain_name(spec: str) -> str:
    name, sep, root = str(spec).partition("=")
    return name if sep else Path(name).resolve().name


def augment_share(pixels: np.ndarray, preset_name: str | None, fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """Replace a seeded `fraction` of the images by an augmented view (in place on a copy); returns
    (pixels, how many).  Used for int8 calibration and QAT only - never for the Keras reference or parity."""
    if not preset_name or fraction <= 0 or len(pixels) == 0:
        return pixels, 0
    from .augment import augment, preset

    aug = preset(preset_name)
    out = pixels.copy()
    pick = np.random.default_rng([seed, 77]).permutation(len(pixels))[:int(round(fraction * len(pixels)))]
    for i in pick:
        out[i] = augment(out[i], np.random.default_rng([seed, 78, int(i)]), aug)
    return out, int(len(pick))


def _calibration_batch(pixels: np.ndarray, transform: Callable | None) -> np.ndarray:
    """float32 copy of the calibration pixels with one 0 and one 255 pixel in the first image.

    The input range of a full-integer model is the min/max the calibrator sees; forcing it to exactly
    [0, 255] gives input scale 1.0 / zero point 0, i.e. the uint8 input takes raw pixels.
    """
    x = pixels.astype(np.float32)
    x[0, 0, 0, :] = 0.0
    x[0, 0, 1, :] = 255.0
    if transform is not None:  # testing hook: simulates a broken calibration pipeline end to end
        x = np.asarray(transform(x), dtype=np.float32)
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------------------------- parity

def _parity_domains(cfg: ExportConfig, model, size: int, say) -> dict:
    """name -> (pixels, labels, Keras probabilities) for each --parity-data root (every valid image)."""
    from .evaluate_model import collect_inputs

    out = {}
    for spec in cfg.parity_domains:
        name, root = _domain_name(spec), _domain_root(spec)
        inputs = collect_inputs(root, "all", None, progress=False)
        pixels = preprocess_batch(inputs.paths, size)
        ref = np.concatenate([model(pixels[s:s + cfg.batch_size].astype(np.float32), training=False).numpy()
                              for s in range(0, len(pixels), cfg.batch_size)]).astype(np.float32)
        out[name] = (pixels, inputs.labels, ref)
        say(f"Parity domain {name}: {len(pixels)} images, Keras accuracy "
            f"{float(np.mean(ref.argmax(1) == inputs.labels)):.2%}")
    return out


def _parity(probs: np.ndarray, ref_probs: np.ndarray, labels: np.ndarray, variant: str,
            cfg: ExportConfig, agreement_only: bool = False) -> dict:
    """Parity of a variant with the Keras model.  Off-domain (`agreement_only`) only agreement is gated:
    on a foreign set of ~100 images one image is 1 pp, so an accuracy-drop gate would be noise."""
    from .evaluate import gate_reasons, parity

    p, _, _ = parity(probs, ref_probs, labels, list(CLASSES))
    if agreement_only:
        gate = {"min_agreement_pct": cfg.min_domain_agreement if cfg.min_domain_agreement is not None
                else cfg.min_int8_agreement if variant in INT8_VARIANTS else cfg.min_float_agreement}
    elif variant in INT8_VARIANTS:
        gate = {"max_accuracy_drop_pp": cfg.max_int8_drop, "min_agreement_pct": cfg.min_int8_agreement}
    else:
        gate = {"min_agreement_pct": cfg.min_float_agreement}
    reasons = gate_reasons(p["delta_accuracy_pp"], p["agreement_pct"], max_drop_pp=gate.get("max_accuracy_drop_pp"),
                           min_agreement_pct=gate["min_agreement_pct"])
    return {
        "n": p["n"],
        "accuracy": p["accuracy"],
        "keras_accuracy": p["reference_accuracy"],  # export's reference is always the Keras model
        "delta_accuracy_pp": round(p["delta_accuracy_pp"], 4),
        "agreement_pct": round(p["agreement_pct"], 4),
        "mean_abs_dprob": p["mean_abs_dprob"],
        "max_abs_dprob": p["max_abs_dprob"],
        "balanced_accuracy": p["balanced_accuracy"],
        "macro_f1": p["macro_f1"],
        "gate": gate,
        "passed": not reasons,
        "reasons": reasons,
    }


# --------------------------------------------------------------------------------------------- main

def export_model(cfg: ExportConfig) -> ExportResult:
    """Convert, embed contracts, check parity, write manifest.json (and the Android bundle); see module doc.

    Raises WbcEdgeError for unusable inputs (before anything is written) and ExportFailed - after writing
    every file and manifest.json - when a variant failed its conversion or parity gate.
    """
    say = print if cfg.verbose else (lambda *_a, **_k: None)
    t_start = time.perf_counter()
    variants = _validate(cfg)
    inp = _resolve(cfg)
    _guard_outputs(inp, cfg.force)

    from .data import SplitManifest

    manifest_obj = SplitManifest.load(inp.split_path)
    split_sha = sha256_file(inp.split_path)
    manifest_obj.verify(inp.data_root)
    model_sha = sha256_file(inp.model_path)
    warnings: list[str] = []
    if inp.run_info:
        rec = inp.run_info.get("model_sha256")
        if rec and rec != model_sha:
            warnings.append(f"{inp.model_path.name} sha256 differs from run.json's model_sha256 (model "
                            "replaced after training?)")
        rec = inp.run_info.get("split_manifest_sha256")
        if rec and rec != split_sha:
            warnings.append(f"{inp.split_path.name} sha256 differs from run.json's split_manifest_sha256")
    for w in warnings:
        say(f"Warning: {w}")

    from .model import load_model
    from .tfcompat import import_tf, versions

    say(f"Loading {inp.model_path} ...")
    import_tf()
    model = load_model(inp.model_path)
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or shape[1] is None:
        raise ModelFileError(f"{inp.model_path}: expected input (None, S, S, 3), got {shape}")
    size = int(shape[1])
    if int(model.output_shape[-1]) != len(CLASSES):
        raise ModelFileError(f"{inp.model_path}: outputs {model.output_shape[-1]} classes, expected "
                             f"{len(CLASSES)} ({', '.join(CLASSES)})")
    vers = versions()

    # Pixels: calibration (train) and parity (test) sets, each preprocessed once.
    need_cal = any(v in INT8_VARIANTS for v in variants)
    cal_info = None
    cal_pixels = None
    if need_cal:
        cpaths, clabels = manifest_obj.files(cfg.calibration_split, inp.data_root)
        if not cpaths:
            raise DatasetError(f"{inp.split_path}: split '{cfg.calibration_split}' is empty (calibration)")
        idx = stratified_indices(clabels, cfg.calibration_size, cfg.seed)
        t = time.perf_counter()
        cal_pixels = preprocess_batch([cpaths[i] for i in idx], size)
        cal_pixels, n_aug = augment_share(cal_pixels, cfg.calibration_augment, cfg.calibration_augmented_fraction,
                                          cfg.seed)
        cal_info = {"split": cfg.calibration_split, "size": int(len(idx)), "seed": cfg.seed,
                    "augmented": {"preset": cfg.calibration_augment, "images": n_aug},
                    "per_class": {CLASSES[c]: int(np.sum(clabels[idx] == c)) for c in range(len(CLASSES))},
                    "pinned_pixels": "image 0: pixel (0,0) = 0, pixel (0,1) = 255 (input range 0..255)",
                    "transform": None if cfg.calibration_transform is None
                    else getattr(cfg.calibration_transform, "__name__", "custom")}
        say(f"Calibration: {len(idx)} images from the '{cfg.calibration_split}' split "
            f"({time.perf_counter() - t:.1f} s to preprocess)")
    ppaths, plabels = manifest_obj.files(cfg.parity_split, inp.data_root)
    if not ppaths:
        raise DatasetError(f"{inp.split_path}: split '{cfg.parity_split}' is empty (parity)")
    pidx = stratified_indices(plabels, cfg.parity_limit, cfg.seed)
    par_paths, par_labels = [ppaths[i] for i in pidx], np.asarray(plabels)[pidx]
    t = time.perf_counter()
    par_pixels = preprocess_batch(par_paths, size)
    ref_probs = np.concatenate([
        model(par_pixels[s:s + cfg.batch_size].astype(np.float32), training=False).numpy()
        for s in range(0, len(par_pixels), cfg.batch_size)]).astype(np.float32)
    ref_acc = float(np.mean(ref_probs.argmax(1) == par_labels))
    say(f"Keras reference on {len(par_paths)} '{cfg.parity_split}' images: accuracy {ref_acc:.2%} "
        f"({time.perf_counter() - t:.1f} s)")
    domains = _parity_domains(cfg, model, size, say)

    out = inp.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # an interrupted export must not leave a stale manifest
    num_threads = cfg.num_threads or min(4, os.cpu_count() or 1)
    entries: list[dict] = []
    files: dict[str, Path] = {}
    from .confidence import load_calibration

    confidence = load_calibration(inp.model_path.parent)  # calibration.json beside model.keras, if fitted
    base_contract = dict(labels=list(CLASSES), input_size=size, preprocess=PREPROCESS_VERSION,
                         source_model_sha256=model_sha, split_manifest_sha256=split_sha, versions=vers,
                         temperature=confidence.temperature if confidence else None,
                         abstain_threshold=confidence.abstain_threshold if confidence else None)
    qat_info = None
    tmp_root = Path(tempfile.mkdtemp(prefix="wbc_export_"))
    try:
        float_sm = None
        for variant in variants:
            entry: dict = {"variant": variant, "file": variant_file(variant), "status": "ok", "reason": None}
            entries.append(entry)
            try:
                t0 = time.perf_counter()
                if variant == "qat_int8":
                    from .export_qat import save_qat_model, train_qat

                    say(f"[{variant}] quantization-aware fine-tune ...")
                    tpaths, tlabels = manifest_obj.files("train", inp.data_root)
                    tidx = stratified_indices(tlabels, cfg.qat_images, cfg.seed + 1)
                    qat_pixels, n_qat_aug = augment_share(preprocess_batch([tpaths[i] for i in tidx], size),
                                                          cfg.calibration_augment,
                                                          cfg.calibration_augmented_fraction, cfg.seed + 1)
                    qmodel, qat_info = train_qat(
                        model, cal_pixels, qat_pixels,
                        np.asarray(tlabels)[tidx],
                        epochs=cfg.qat_epochs, batch_size=cfg.qat_batch_size,
                        learning_rate=cfg.qat_learning_rate, seed=cfg.seed, log=say)
                    qat_info["augmented_images"] = n_qat_aug
                    if cfg.save_qat_model:
                        save_qat_model(qmodel, out / "qat_model.h5")
                        qat_info["saved"] = "qat_model.h5"
                    sm = tmp_root / "qat_saved_model"
                    _saved_model(qmodel, sm)
                    del qmodel
                else:
                    if float_sm is None:
                        say("Exporting the SavedModel for conversion ...")
                        float_sm = tmp_root / "saved_model"
                        _saved_model(model, float_sm)
                    sm = float_sm
                n_cal = len(cal_pixels) if need_cal else 0
                what = {"float32": "float32", "float16": "float16 weights",
                        "dynamic": "dynamic-range (int8 weights)",
                        "int8": f"full-integer int8 PTQ, uint8 I/O, {n_cal} calibration images",
                        "qat_int8": "full-integer int8 from QAT, uint8 I/O"}[variant]
                say(f"[{variant}] converting ({what}) ...")
                tc = time.perf_counter()
                cal = (_calibration_batch(cal_pixels, cfg.calibration_transform)
                       if variant in INT8_VARIANTS else None)
                flat = _convert(sm, variant, cal)
                entry["conversion_seconds"] = round(time.perf_counter() - tc, 2)
                if variant == "qat_int8":
                    entry["qat_seconds"] = round(tc - t0, 2)
                    entry["qat"] = qat_info
                if variant in INT8_VARIANTS:
                    entry["calibration_size"] = int(len(cal))
                in_det, out_det = tensor_details(flat)
                in_scale, in_zp = _quant_or_none(in_det)
                out_scale, out_zp = _quant_or_none(out_det)
                contract = ModelContract(variant=variant, input_dtype=np.dtype(in_det["dtype"]).name,
                                         output_dtype=np.dtype(out_det["dtype"]).name,
                                         input_scale=in_scale, input_zero_point=in_zp,
                                         output_scale=out_scale, output_zero_point=out_zp,
                                         **base_contract)
                if variant in INT8_VARIANTS:
                    contract.normalisation = ("in-graph: x / 127.5 - 1 (MobileNetV2); uint8 input = raw RGB "
                                              "pixels 0..255 as an Android Bitmap holds them (scale 1.0, "
                                              "zero point 0)")
                    contract.output = ("softmax probabilities as uint8: p = (q - output_zero_point) * "
                                       "output_scale, one per label, in label order")
                # Standard TFLite metadata (MediaPipe Tasks / Task Library / Android Studio) inside the
                # flatbuffer, then our contract zip after it (wbc_edge.tflite_metadata).
                flat = add_standard_metadata(flat, contract, source=variant_file(variant))
                data = embed_contract(flat, contract)
                path = out / variant_file(variant)
                atomic.write_bytes(path, data)
                files[variant] = path
                entry.update({
                    "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                    "flatbuffer_bytes": len(flat), "flatbuffer_sha256": hashlib.sha256(flat).hexdigest(),
                    "tflite_metadata": metadata_summary(flat),
                    "input": {"shape": [int(d) for d in in_det["shape"]], "dtype": contract.input_dtype,
                              "scale": in_scale, "zero_point": in_zp},
                    "output": {"shape": [int(d) for d in out_det["shape"]], "dtype": contract.output_dtype,
                               "scale": out_scale, "zero_point": out_zp},
                })
                problem = check_input_quantisation(in_det) if variant in INT8_VARIANTS else None
                tp = time.perf_counter()
                probs = _Predictor(path, num_threads)(par_pixels)
                entry["parity"] = _parity(probs, ref_probs, par_labels, variant, cfg)
                reasons = ([problem] if problem else []) + entry["parity"]["reasons"]
                if domains:
                    entry["parity_domains"] = {}
                    for name, (d_pixels, d_labels, d_ref) in domains.items():
                        d = _parity(_Predictor(path, num_threads)(d_pixels), d_ref, d_labels, variant, cfg,
                                    agreement_only=True)
                        entry["parity_domains"][name] = d
                        reasons += [f"{name}: {r}" for r in d["reasons"]]
                        say(f"[{variant}]   {name}: agreement {d['agreement_pct']:.2f}% on {d['n']} images, "
                            f"accuracy {d['accuracy']:.2%} (Keras {d['keras_accuracy']:.2%})")
                entry["parity_seconds"] = round(time.perf_counter() - tp, 2)
                if reasons:
                    entry["status"], entry["reason"] = "failed", "; ".join(reasons)
                p = entry["parity"]
                say(f"[{variant}] {len(data) / 1e6:.2f} MB, converted in "
                    f"{entry['conversion_seconds']:.1f} s; parity on {p['n']}: accuracy {p['accuracy']:.2%} "
                    f"(Δ {p['delta_accuracy_pp']:+.2f} pp), "
                    f"agreement {p['agreement_pct']:.2f}%, max |Δp| {p['max_abs_dprob']:.2e} -> "
                    + ("ok" if entry["status"] == "ok" else f"FAILED: {entry['reason']}"))
            except WbcEdgeError as exc:
                entry["status"], entry["reason"] = "failed", str(exc)
                say(f"[{variant}] FAILED: {exc}")
            except Exception as exc:  # noqa: BLE001 - a converter crash fails this variant, not the others
                entry["status"] = "failed"
                entry["reason"] = f"conversion error: {type(exc).__name__}: {first_line(str(exc))}"
                say(f"[{variant}] FAILED: {entry['reason']}")
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    # Files this run did not write would contradict the manifest: remove them (force only).  That covers
    # variants not selected and variants whose conversion failed before their file was written.
    stale = [v for v in VARIANTS if v not in files and (out / variant_file(v)).exists()]
    for v in stale:
        (out / variant_file(v)).unlink()
    if stale:
        say(f"Removed stale {', '.join(variant_file(v) for v in stale)} from a previous export")

    android = None
    if inp.android_dir is not None:
        android = _android(inp.android_dir, entries, files, say)

    failed = [e for e in entries if e["status"] != "ok"]
    manifest = {
        "format": MANIFEST_FORMAT,
        "status": "failed" if failed else "ok",
        "source_model": {"path": str(inp.model_path), "sha256": model_sha, "input_size": size,
                         "params": int(model.count_params())},
        "split_manifest": {"path": str(inp.split_path), "sha256": split_sha},
        "data_root": str(inp.data_root),
        "labels": list(CLASSES),
        "preprocess": PREPROCESS_VERSION,
        "versions": vers,
        "converter": "tf.lite.TFLiteConverter.from_saved_model (SavedModel from tf_keras Model.export)",
        "calibration": cal_info,
        "confidence": confidence.to_dict() if confidence else None,
        "parity_reference": {"split": cfg.parity_split, "n": int(len(par_paths)), "limit": cfg.parity_limit,
                             "keras_accuracy": ref_acc, "interpreter_threads": num_threads},
        "parity_domains": {name: {"n": int(len(d[1])), "keras_accuracy": float(np.mean(d[2].argmax(1) == d[1]))}
                           for name, d in domains.items()},
        "variants": entries,
        "android": android,
        "warnings": warnings,
        "determinism": DETERMINISM_NOTE,
        "config": cfg.to_dict(),
        "total_seconds": round(time.perf_counter() - t_start, 1),
    }
    manifest_path = out / MANIFEST_NAME
    atomic.write_json(manifest_path, manifest)
    bundle = inp.android_dir if android is not None and android.get("status") == "ok" else None
    result = ExportResult(out, manifest_path, manifest, files, bundle, ok=not failed)
    say(f"Wrote {manifest_path} ({len(entries) - len(failed)}/{len(entries)} variants ok, "
        f"{manifest['total_seconds']:.0f} s)")
    if failed:
        detail = "; ".join(f"{e['variant']}: {e['reason']}" for e in failed)
        raise ExportFailed(f"{len(failed)} of {len(entries)} variant(s) failed ({detail}); files kept, see "
                           f"{manifest_path}", result)
    return result


def _android(bundle_dir: Path, entries: list[dict], files: dict[str, Path], say) -> dict:
    """Write the Android bundle from the better int8 variant (by parity) that passed; record what was done."""
    candidates = [e for e in entries
                  if e["variant"] in INT8_VARIANTS and e["status"] == "ok" and "parity" in e]
    if not candidates:
        say("Android bundle not written: no int8 variant passed its checks")
        return {"status": "skipped", "reason": "no int8 variant passed its checks", "dir": str(bundle_dir)}

    def key(e):
        p = e["parity"]
        return (p["agreement_pct"], p["delta_accuracy_pp"], -p["mean_abs_dprob"], e["variant"] == "int8")

    best = max(candidates, key=key)
    data = files[best["variant"]].read_bytes()
    in_det, out_det = tensor_details(data)
    from .contract import read_contract

    contract = read_contract(data)
    meta = bundle_metadata(data, contract, in_det, out_det, source_variant=best["variant"],
                           parity=best["parity"])
    shas = write_bundle(bundle_dir, data, meta)
    problems = check_android_bundle(bundle_dir)
    if problems:  # pragma: no cover - would be a bug in the writer
        raise WbcEdgeError(f"{bundle_dir}: Android bundle check failed: {'; '.join(problems)}")
    say(f"Android bundle: {bundle_dir} (from {best['variant']}; wbc_int8.tflite, labels.txt, wbc_model.json, "
        "README.md)")
    return {"status": "ok", "dir": str(bundle_dir), "source_variant": best["variant"], "files": shas}
