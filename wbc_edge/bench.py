"""Benchmark harness: does every exported variant match the reference, and how fast is it on this device?

    from wbc_edge.bench import BenchConfig, run_bench, to_markdown
    result = run_bench(BenchConfig(["export/wbc_float32.tflite", "export/wbc_int8.tflite"],
                                   data="samples/pbc_sample", threads=(1, 2)))
    print(to_markdown(result))

What is measured (see benchmarks/README.md for how to run it on a host, a Raspberry Pi or a phone):

- **Accuracy parity**, on the same images for every variant and the reference: accuracy, balanced
  accuracy, macro-F1, Δ accuracy vs the reference (percentage points), top-1 agreement with the reference,
  per-class recall Δ, mean / max |Δ probability|, and the images where a variant's top-1 differs from the
  reference's.  Each image is preprocessed ONCE (`wbc_edge.preprocess.preprocess`, uint8 cache shared by
  all variants of that input size) and each variant predicts it once (the interpreter's thread count does
  not change its outputs).  Model outputs are mapped to `CLASSES` order through each model's own labels,
  so a model whose embedded labels are in the wrong order really scores badly.
- **Latency** per variant per thread count: load time (`Classifier.load_seconds`: file read, interpreter
  creation, tensor allocation, XNNPACK weight packing), then `warmup` untimed calls, then `runs` timed
  single-image calls (`time.perf_counter` around one `predict_pixels` call on one preprocessed image,
  cycling over the images: input cast/quantise + set_tensor + invoke + get_tensor + dequantise; decoding and
  resizing are excluded) -> p50 / p90 / p99 / mean ± std / min / max; and sequential throughput over
  `batch_throughput_images` images (the models take batch 1, as on a device).  Backend + version, whether
  XNNPACK is on (LiteRT applies it by default; `use_xnnpack=False` selects the reference kernels) and how
  many ops the delegate took, file size, and memory: RSS before/after each variant (current RSS from
  /proc/self/statm) and the process peak (`getrusage` ru_maxrss).  The peak is process-wide and only ever
  grows, so per-variant peaks are not separable in one process; the Keras reference runs in its own
  process, so its peak is its own.
- **Keras reference** (a `.keras` file): probabilities and timings come from a subprocess per thread count
  (`python -m wbc_edge.bench_keras`), because TensorFlow's intra-op thread count must be set before TF
  initialises; it times `model(x, training=False)` on a 1-image batch exactly like the TFLite calls
  (intra-op threads = the thread count, inter-op threads = 1).  The main process never imports TensorFlow.
- **Time to first prediction** (optional; default on when the reference is a `.keras`): wall time of a
  fresh `python` process that imports, loads and classifies one image file - the runtime path
  (`wbc_edge.runtime.Classifier`, the int8 variant if present) vs the Keras path (`load_model` + one call).
- **Gate**: `max_accuracy_drop` (pp) and `min_agreement` (%) per non-reference variant; `result["gate"]`.
- **Clients** (optional, `clients=("mediapipe",)`): each .tflite run through MediaPipe Tasks ImageClassifier
  as an app would, compared by class name with the runtime; `result["clients"]`, see
  `wbc_edge.bench_mediapipe` (MediaPipe is imported only then).

Result: a JSON-able dict, `schema_version` 1 (keys documented in `RESULT_KEYS` / `VARIANT_KEYS` /
`LATENCY_KEYS` / `ROW_KEYS`).  `rows` is the flat table (one row per variant x thread count) that
`merge` combines across devices, including results converted from LiteRT's `benchmark_model` on Android
(`wbc_edge.bench_android`).

TensorFlow-free (numpy, Pillow, a TFLite interpreter); matplotlib only for `plot`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import sha256_file
from .classes import CLASSES
from .errors import BadImageError, DatasetError, ModelFileError, WbcEdgeError

__all__ = ["BenchConfig", "run_bench", "to_markdown", "plot", "merge", "write_outputs", "system_info",
           "load_result", "gate_failures", "SCHEMA_VERSION", "RESULT_KIND", "MERGE_KIND", "RESULT_KEYS",
           "VARIANT_KEYS", "LATENCY_KEYS", "ROW_KEYS"]

SCHEMA_VERSION = 1
RESULT_KIND = "wbc-edge-bench"
MERGE_KIND = "wbc-edge-bench-merge"

#: Top-level keys of a run_bench result (and of a converted benchmark_model result).
RESULT_KEYS = ("schema_version", "kind", "source", "created", "system", "software", "config", "data",
               "reference", "variants", "rows", "ttfp", "memory", "gate", "clients", "domains", "notes", "timings")
#: Keys of each entry of result["variants"].
VARIANT_KEYS = ("name", "path", "kind", "is_reference", "variant", "input_size", "input_dtype", "size_mb",
                "sha256", "labels", "parity", "export_parity", "latency")
#: Keys of each entry of variant["latency"] (one per thread count).
LATENCY_KEYS = ("threads", "backend", "backend_version", "xnnpack", "delegate", "load_ms", "warmup", "runs",
                "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "throughput_images",
                "throughput_img_s", "rss_before_mb", "rss_after_mb", "process_peak_rss_mb")
#: Keys of each entry of result["rows"] (the cross-device table `merge` builds on).
ROW_KEYS = ("device", "arch", "cpu", "os", "backend", "backend_version", "variant", "kind", "is_reference",
            "size_mb", "accuracy", "delta_accuracy_pp", "agreement_pct", "threads", "p50_ms", "p90_ms",
            "mean_ms", "img_s", "load_ms", "xnnpack")

XNNPACK_NOTE = ("LiteRT (ai-edge-litert) applies the XNNPACK delegate by default; --no-xnnpack selects the "
                "builtin reference kernels (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
RSS_NOTE = ("rss_before_mb / rss_after_mb: current resident set size around each variant's load + timing; "
            "process_peak_rss_mb: getrusage ru_maxrss so far - process-wide and monotonic, so it is the "
            "peak of everything run before it too. The Keras reference runs in its own process (its peak "
            "is its own).")
LATENCY_NOTE = ("single-image latency = one predict call from preprocessed uint8 pixels to float "
                "probabilities (cast/quantise, set_tensor, invoke, get_tensor, dequantise); decode + resize "
                "excluded; warm-up calls excluded; img/s = sequential batch-1 calls over "
                "batch_throughput_images images")
MAX_DISAGREEMENTS_LISTED = 500
_RELEVANT_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl",
                       "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16",
                       # ARM (aarch64 /proc/cpuinfo "Features")
                       "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "neon", "vfpv4")


# --------------------------------------------------------------------------------------------- config

@dataclass
class BenchConfig:
    """What to benchmark and how.  Only `models` and `data` are required.

    models: .tflite files (e.g. export/*.tflite).
    data: an ImageFolder root.  With `split_manifest` its `split` rows are used (paths relative to `data`);
        without, every valid image found by `wbc_edge.data.scan_dataset(data)`.
    reference: a .keras (Keras, timed in a subprocess) or .tflite model; None = the float32 .tflite among
        `models` (its Keras parity, if the export's manifest.json sits beside it, is included).
    limit: use at most this many images (a class-balanced, deterministic subset, sorted-path order).
    threads: thread counts to time each variant with.
    max_accuracy_drop (pp) / min_agreement (%): the gate; None = not checked.
    ttfp: time-to-first-prediction subprocesses; None = on when the reference is a .keras.
    keras_timing: time the .keras reference (its probabilities are computed either way).
    device_name: a label for `merge` tables (default: the CPU model).
    python: the interpreter for subprocesses (default: sys.executable).
    clients: also run each .tflite through these clients ("mediapipe": MediaPipe Tasks ImageClassifier).
    """

    models: Sequence[str | os.PathLike]
    data: str | os.PathLike | None = None
    reference: str | os.PathLike | None = None
    split_manifest: str | os.PathLike | None = None
    split: str = "test"
    limit: int | None = None
    threads: Sequence[int] = (1,)
    runs: int = 50
    warmup: int = 5
    batch_throughput_images: int = 64
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    use_xnnpack: bool = True
    ttfp: bool | None = None
    keras_timing: bool = True
    device_name: str | None = None
    python: str | None = None
    clients: Sequence[str] = ()
    #: Other labs' labelled ImageFolders ("ROOT" or "NAME=ROOT"): every .tflite's agreement with the
    #: reference is also measured (and gated by min_agreement) on each of them (wbc_edge.crossdomain).
    domains: Sequence[str] = ()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["models"] = [str(m) for m in self.models]
        d["threads"] = [int(t) for t in self.threads]
        d["clients"] = [str(c) for c in self.clients]
        d["domains"] = [str(x) for x in self.domains]
        for k in ("data", "reference", "split_manifest"):
            d[k] = None if d[k] is None else str(d[k])
        return d


class Reporter:
    """Progress callbacks for `run_bench` (no-op here; the CLI shows a click progress bar)."""

    def log(self, message: str) -> None:
        pass

    def start(self, total: int) -> None:
        pass

    def stage(self, label: str) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


class _PrintReporter(Reporter):
    def __init__(self, log: Callable[[str], None]):
        self._log = log

    def log(self, message: str) -> None:
        self._log(message)


# --------------------------------------------------------------------------------------------- system

def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _cpuinfo_fields() -> dict[str, str]:
    """First value of each key in /proc/cpuinfo (empty off Linux)."""
    out: dict[str, str] = {}
    for line in _read_text("/proc/cpuinfo").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out.setdefault(k.strip().lower(), v.strip())
    return out


def cpu_model() -> str:
    info = _cpuinfo_fields()
    for key in ("model name", "hardware", "model", "cpu model", "processor"):
        v = info.get(key, "")
        if v and not v.isdigit():
            return v
    arm_parts = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
                 "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
                 "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd0c": "Neoverse-N1", "0xd40": "Neoverse-V1"}
    part = info.get("cpu part", "").lower()
    if part in arm_parts:
        return arm_parts[part]
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> list[str]:
    """The int8/float-relevant ISA extensions this CPU reports (x86 'flags' or ARM 'Features')."""
    info = _cpuinfo_fields()
    have = set((info.get("flags", "") + " " + info.get("features", "")).split())
    return [f for f in _RELEVANT_CPU_FLAGS if f in have]


def system_info(device_name: str | None = None) -> dict:
    """CPU model, arch, OS, core counts, relevant CPU flags (for stamping results)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    cpu = cpu_model()
    return {"device": device_name or cpu, "cpu": cpu, "arch": platform.machine(), "os": platform.platform(),
            "cpu_count": os.cpu_count(), "usable_cpus": usable, "cpu_flags": cpu_flags(),
            "hostname": platform.node()}


def _software(backend: str | None, backend_version: str | None) -> dict:
    import PIL

    from . import __version__

    return {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__,
            "wbc_edge": __version__, "runtime_backend": backend, "runtime_backend_version": backend_version}


def _rss_mb() -> float | None:
    """Current resident set size of this process (MB), from /proc/self/statm; None where unavailable."""
    text = _read_text("/proc/self/statm").split()
    if len(text) < 2:
        return None
    return int(text[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_rss_mb() -> float | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB on Linux




# --------------------------------------------------------------------------------------------- models

@dataclass
class _Model:
    name: str
    path: Path
    kind: str                       # "tflite" | "keras"
    is_reference: bool = False
    contract: Any = None
    input_size: int | None = None
    variant: str | None = None
    input_dtype: str | None = None
    export_parity: dict | None = None
    probs: np.ndarray | None = None
    labels: list[str] | None = None
    latency: list[dict] = field(default_factory=list)


def _model_kind(path: Path) -> str:
    if path.suffix == ".keras":
        return "keras"
    if path.suffix == ".tflite":
        return "tflite"
    raise ModelFileError(f"{path}: expected a .tflite (or, as --reference, a .keras) model file")


def keras_input_size(path: str | os.PathLike) -> int | None:
    """Input size from a .keras archive's config.json without TensorFlow (None when not found)."""

    def find(obj):
        if isinstance(obj, dict):
            for key in ("batch_input_shape", "batch_shape"):
                shape = obj.get(key)
                if isinstance(shape, list) and len(shape) == 4 and isinstance(shape[1], int):
                    return int(shape[1])
            for v in obj.values():
                r = find(v)
                if r:
                    return r
        elif isinstance(obj, list):
            for v in obj:
                r = find(v)
                if r:
                    return r
        return None

    try:
        with zipfile.ZipFile(path) as zf:
            return find(json.loads(zf.read("config.json")))
    except (OSError, zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        return None


def _export_record(path: Path) -> tuple[dict | None, dict | None]:
    """(export manifest.json entry for this file, the manifest's parity_reference) when one sits beside it."""
    manifest = path.parent / "manifest.json"
    if not manifest.is_file():
        return None, None
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None, None
    for entry in data.get("variants", []) or []:
        if isinstance(entry, dict) and entry.get("file") == path.name:
            rec = {"manifest": str(manifest), "variant": entry.get("variant"), "status": entry.get("status"),
                   "reason": entry.get("reason"), "parity": entry.get("parity"),
                   "sha256": entry.get("sha256")}
            return rec, data.get("parity_reference")
    return None, None


def _resolve_models(cfg: BenchConfig, notes: list[str]) -> tuple[list[_Model], _Model]:
    from .contract import read_contract

    if not cfg.models:
        raise WbcEdgeError("no models given")
    models: list[_Model] = []
    for m in cfg.models:
        p = Path(m)
        if not p.is_file():
            raise ModelFileError(f"{p}: model file not found")
        if _model_kind(p) != "tflite":
            raise ModelFileError(f"{p}: MODELS must be .tflite files; pass a .keras model as --reference")
        models.append(_Model(name="", path=p, kind="tflite", contract=read_contract(p)))
    ref_model: _Model | None = None
    if cfg.reference is not None:
        rp = Path(cfg.reference)
        if not rp.is_file():
            raise ModelFileError(f"{rp}: reference model file not found")
        kind = _model_kind(rp)
        if kind == "tflite":
            for m in models:
                if os.path.samefile(m.path, rp):
                    ref_model = m
                    break
            if ref_model is None:
                ref_model = _Model(name="", path=rp, kind="tflite", contract=read_contract(rp))
                models.insert(0, ref_model)
        else:
            ref_model = _Model(name="keras", path=rp, kind="keras", input_size=keras_input_size(rp))
            models.insert(0, ref_model)
        notes.append(f"reference: {rp} (given with --reference)")
    else:
        for m in models:
            variant = m.contract.variant if m.contract is not None else None
            if variant == "float32" or (variant is None and m.path.stem.endswith("float32")):
                ref_model = m
                break
        if ref_model is None:
            ref_model = models[0]
            notes.append(f"no --reference and no float32 .tflite among MODELS: the reference is the first "
                         f"model, {ref_model.path}")
        else:
            notes.append(f"no --reference given: the reference is the float32 .tflite among MODELS "
                         f"({ref_model.path}); its parity with the Keras model is the export's, recorded in "
                         "the manifest.json beside it (reference.export_parity)")
    ref_model.is_reference = True

    # names: the contract's variant when unique, else the file stem, else parent/stem
    tfl = [m for m in models if m.kind == "tflite"]
    variants = [m.contract.variant if m.contract is not None else None for m in tfl]
    for m, v in zip(tfl, variants):  # noqa: B905 - same length; Python 3.9
        m.variant = v
        m.name = v if v and variants.count(v) == 1 else m.path.stem
    names = [m.name for m in models]
    for m in models:
        if names.count(m.name) > 1:
            m.name = f"{m.path.parent.name}/{m.path.stem}"
    if len({m.name for m in models}) != len(models):
        raise WbcEdgeError("the same model file is listed twice: " + ", ".join(str(m.path) for m in models))
    for m in models:
        if m.kind == "tflite":
            m.export_parity, _ = _export_record(m.path)
    return models, ref_model


# --------------------------------------------------------------------------------------------- data

def _balanced_subset(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of a class-balanced, deterministic subset (round-robin over classes in input order)."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    rank = np.zeros(n, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, lab in enumerate(labels):
        rank[i] = seen.get(int(lab), 0)
        seen[int(lab)] = rank[i] + 1
    order = np.lexsort((labels, rank))  # by rank within class, then class
    return np.sort(order[:limit])


def _load_data(cfg: BenchConfig, notes: list[str]) -> tuple[list[str], np.ndarray, dict]:
    """(absolute paths, label indices, data info) of the images to use."""
    if cfg.data is None:
        raise DatasetError("no data given: pass --data ROOT (an ImageFolder, or the root a split manifest's "
                           "paths are relative to)")
    root = Path(cfg.data)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder not found")
    from .data import SplitManifest, require_all_classes, scan_dataset

    info: dict[str, Any] = {"root": str(root), "split_manifest": None, "split": None}
    if cfg.split_manifest is not None:
        manifest = SplitManifest.load(cfg.split_manifest)
        paths, labels = manifest.files(cfg.split, root)
        if not paths:
            raise DatasetError(f"{cfg.split_manifest}: split '{cfg.split}' is empty")
        require_all_classes(labels, f"{cfg.split_manifest}: split '{cfg.split}'")
        manifest.verify(root)  # a manifest paired with the wrong data folder fails here, not as "skipped"
        info.update(split_manifest=str(cfg.split_manifest), split=cfg.split,
                    sha256=sha256_file(cfg.split_manifest), sha256_of="split manifest file")
        rels = manifest.paths(cfg.split)
    else:
        scan = scan_dataset(root, progress=False)
        if not scan.records:
            raise DatasetError(f"{root}: no valid images found")
        rels = [r.path for r in scan.records]
        paths = [os.path.join(scan.root, *r.path.split("/")) for r in scan.records]
        labels = np.array([r.label_index for r in scan.records], dtype=np.int64)
        listing = "".join(f"{r.path},{r.label},{r.sha256}\n" for r in scan.records)
        info.update(sha256=hashlib.sha256(listing.encode("utf-8")).hexdigest(),
                    sha256_of="listing 'path,label,file_sha256' of every valid image (scan_dataset order)",
                    skipped_bad_files=len(scan.bad))
        notes.append(f"no --split-manifest: all {len(paths)} valid images under {root} are used")
    idx = _balanced_subset(np.asarray(labels), cfg.limit)
    paths = [paths[i] for i in idx]
    rels = [rels[i] for i in idx]
    labels = np.asarray(labels, dtype=np.int64)[idx]
    info["limit"] = cfg.limit
    info["_rels"] = rels
    return paths, labels, info


# --------------------------------------------------------------------------------------------- timing

def latency_stats(seconds: Sequence[float]) -> dict:
    """ms statistics of per-call times (given in s): p50/p90/p99 (linear interp.), mean, std, min, max."""
    t = np.asarray(seconds, dtype=np.float64) * 1e3
    if t.size == 0:
        return {k: None for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")}
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99), "mean_ms": float(t.mean()),
            "std_ms": float(t.std(ddof=1)) if t.size > 1 else 0.0, "min_ms": float(t.min()),
            "max_ms": float(t.max())}


def delegated_op_indices(ops: list[dict]) -> set[int]:
    """Indices of the original ops that a delegate took, from an interpreter's node list
    (`_get_ops_details()`): an op is delegated when it lies between a DELEGATE node's inputs and outputs."""
    delegates = [o for o in ops if str(o.get("op_name", "")).upper() == "DELEGATE"]
    producer = {int(t): o for o in ops if str(o.get("op_name", "")).upper() != "DELEGATE" for t in o["outputs"]}
    covered: set[int] = set()
    for d in delegates:
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in stop:
                continue
            seen.add(t)
            op = producer.get(t)
            if op is None or op["index"] in covered:
                continue
            covered.add(op["index"])
            stack.extend(int(x) for x in op["inputs"] if int(x) >= 0)
    return covered


def delegation_summary(interpreter) -> dict | None:
    """Which ops a delegate (XNNPACK) took: {partitions, ops_total, ops_delegated, not_delegated: {op: n}}.

    Uses the interpreter's node list (`_get_ops_details`, experimental): delegate nodes are named
    'DELEGATE'; an original op is delegated when it lies between a delegate node's inputs and outputs.
    None when the backend does not expose the node list.
    """
    try:
        ops = interpreter._get_ops_details()
    except Exception:  # noqa: BLE001 - private API; absent or different in some backends
        return None
    originals = [o for o in ops if str(o.get("op_name", "")).upper() != "DELEGATE"]
    delegates = [o for o in ops if str(o.get("op_name", "")).upper() == "DELEGATE"]
    covered = delegated_op_indices(ops)
    not_delegated: dict[str, int] = {}
    for o in originals:
        if o["index"] not in covered:
            not_delegated[o["op_name"]] = not_delegated.get(o["op_name"], 0) + 1
    return {"partitions": len(delegates), "ops_total": len(originals), "ops_delegated": len(covered),
            "not_delegated": not_delegated}


def _time_tflite(m: _Model, threads: int, pixels: np.ndarray, cfg: BenchConfig, rep: Reporter) -> dict:
    from .runtime import Classifier

    gc.collect()
    rss_before = _rss_mb()
    clf = Classifier(m.path, num_threads=int(threads), use_xnnpack=cfg.use_xnnpack)
    n = len(pixels)
    for i in range(cfg.warmup):
        clf.predict_pixels(pixels[i % n][None])
    rep.advance(cfg.warmup)
    times = []
    perf = time.perf_counter
    for i in range(cfg.runs):
        x = pixels[i % n][None]
        t0 = perf()
        clf.predict_pixels(x)
        times.append(perf() - t0)
    rep.advance(cfg.runs)
    b = int(cfg.batch_throughput_images)
    tput = None
    if b > 0:
        batch = pixels[np.arange(b) % n]
        t0 = perf()
        clf.predict_pixels(batch)
        elapsed = perf() - t0
        tput = b / elapsed if elapsed > 0 else None
        rep.advance(b)
    rec = {"threads": int(threads), "backend": clf.backend, "backend_version": clf.backend_version,
           "xnnpack": bool(cfg.use_xnnpack), "delegate": delegation_summary(clf.interpreter),
           "load_ms": clf.load_seconds * 1e3, "warmup": int(cfg.warmup), "runs": int(cfg.runs),
           **latency_stats(times), "throughput_images": b, "throughput_img_s": tput,
           "rss_before_mb": rss_before, "rss_after_mb": _rss_mb(), "process_peak_rss_mb": _peak_rss_mb()}
    del clf
    gc.collect()
    return rec


def _python(cfg: BenchConfig) -> str:
    return cfg.python or sys.executable


def _subprocess_env() -> dict:
    pkg_parent = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    return env


def _run_keras_worker(cfg: BenchConfig, model: Path, pixels_file: Path, threads: int, out_dir: Path,
                      probs: bool, timing: bool) -> dict:
    out_json = out_dir / f"keras_t{threads}.json"
    cmd = [_python(cfg), "-m", "wbc_edge.bench_keras", "--model", str(model), "--pixels", str(pixels_file),
           "--threads", str(threads), "--runs", str(cfg.runs if timing else 0),
           "--warmup", str(cfg.warmup if timing else 0),
           "--batch-images", str(cfg.batch_throughput_images if timing else 0), "--json-out", str(out_json)]
    if probs:
        cmd += ["--probs-out", str(out_dir / "keras_probs.npy")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_subprocess_env())
    if proc.returncode != 0 or not out_json.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise WbcEdgeError(f"{model}: the Keras reference worker failed (exit {proc.returncode}): "
                           + " | ".join(tail))
    return json.loads(out_json.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------- TTFP

_TTFP_RUNTIME = ("import json, sys, time\nt0 = time.perf_counter()\nfrom wbc_edge.runtime import Classifier\n"
                 "pred = Classifier(sys.argv[1]).predict(sys.argv[2])\n"
                 "print(json.dumps({'in_process_s': time.perf_counter() - t0, 'label': pred.label}))\n")
_TTFP_KERAS = ("import json, sys, time\nt0 = time.perf_counter()\nimport numpy as np\n"
               "from wbc_edge.model import load_model, model_input_size\n"
               "from wbc_edge.preprocess import preprocess\n"
               "m = load_model(sys.argv[1])\n"
               "p = np.asarray(m(preprocess(sys.argv[2], model_input_size(m))[None].astype('float32'), "
               "training=False))[0]\n"
               "print(json.dumps({'in_process_s': time.perf_counter() - t0, 'index': int(p.argmax())}))\n")


def _ttfp(cfg: BenchConfig, kind: str, model: Path, image: str) -> dict:
    code = _TTFP_RUNTIME if kind == "runtime" else _TTFP_KERAS
    t0 = time.perf_counter()
    proc = subprocess.run([_python(cfg), "-c", code, str(model), image], capture_output=True, text=True,
                          env=_subprocess_env())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
        return {"path": kind, "model": str(model), "error": " | ".join(tail), "wall_s": wall}
    rec = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"path": kind, "model": str(model), "wall_s": wall, "in_process_s": rec["in_process_s"],
            "what": ("fresh python process: import wbc_edge.runtime, Classifier(model), predict(image file)"
                     if kind == "runtime" else
                     "fresh python process: import TensorFlow, load_model(.keras), preprocess, model(x)")}


# --------------------------------------------------------------------------------------------- parity

def _parity(m: _Model, ref: _Model, labels: np.ndarray, rels: list[str]) -> dict:
    from .evaluate import parity, per_class_recall_delta

    summary, met, ref_met = parity(m.probs, ref.probs, labels, list(CLASSES))
    pred, ref_pred = m.probs.argmax(1), ref.probs.argmax(1)
    dis = np.nonzero(pred != ref_pred)[0]
    listed = [{"path": rels[i], "true": CLASSES[int(labels[i])],
               "reference_label": CLASSES[int(ref_pred[i])],
               "reference_conf": float(ref.probs[i, ref_pred[i]]),
               "variant_label": CLASSES[int(pred[i])], "variant_conf": float(m.probs[i, pred[i]])}
              for i in dis[:MAX_DISAGREEMENTS_LISTED]]
    return {**summary,
            "per_class_recall_delta_pp": {k: 100.0 * v
                                          for k, v in per_class_recall_delta(met, ref_met).items()},
            "per_class": met.per_class, "confusion": met.confusion,
            "n_disagreements": int(len(dis)), "disagreements": listed}


def _domains(cfg: BenchConfig, models: list, ref, rep: Reporter) -> dict | None:
    """Per-domain accuracy and agreement with the reference on cfg.domains (None without domains)."""
    if not cfg.domains:
        return None
    from .crossdomain import CrossDomainConfig, Domain, run_report

    doms = []
    for spec in cfg.domains:
        name, sep, root = str(spec).partition("=")
        doms.append(Domain(root=root, name=name) if sep else Domain(root=name))
    paths = [str(m.path) for m in models if m.kind == "tflite" or m.is_reference]
    rep.log(f"Other domains: {', '.join(d.label for d in doms)}")
    return run_report(CrossDomainConfig(models=paths, domains=doms, reference=str(ref.path), progress=True,
                                        min_agreement=cfg.min_agreement), log=rep.log)


def gate_failures(result: dict) -> list[dict]:
    """[{variant, reason, delta_accuracy_pp, agreement_pct}] for each non-reference variant over the gate."""
    from .evaluate import gate_reasons

    cfg = result.get("config", {})
    out = []
    for v in result.get("variants", []):
        p = v.get("parity")
        if v.get("is_reference") or not p:
            continue
        reasons = gate_reasons(p["delta_accuracy_pp"], p["agreement_pct"], max_drop_pp=cfg.get("max_accuracy_drop"),
                               min_agreement_pct=cfg.get("min_agreement"))
        if reasons:
            reason = (f"{'; '.join(reasons)} ({p['accuracy']:.2%} vs reference {p['reference_accuracy']:.2%}; "
                      f"{p['n_disagreements']} of {p['n']} images differ)")
            out.append({"variant": v["name"], "reason": reason,
                        "delta_accuracy_pp": p["delta_accuracy_pp"], "agreement_pct": p["agreement_pct"]})
    for f in ((result.get("domains") or {}).get("gate") or {}).get("failures", []):
        out.append({"variant": Path(f["model"]).name, "reason": f"on {f['domain']}: {f['reason']}",
                    "delta_accuracy_pp": None, "agreement_pct": None})
    return out


# --------------------------------------------------------------------------------------------- main

def _validate(cfg: BenchConfig) -> None:
    threads = [int(t) for t in cfg.threads]
    if not threads or any(t < 1 for t in threads):
        raise WbcEdgeError(f"threads must be positive integers, got {list(cfg.threads)}")
    if cfg.runs < 1:
        raise WbcEdgeError(f"runs must be >= 1, got {cfg.runs}")
    if cfg.warmup < 0 or cfg.batch_throughput_images < 0:
        raise WbcEdgeError("warmup and batch_throughput_images must be >= 0")
    if cfg.limit is not None and cfg.limit < 1:
        raise WbcEdgeError(f"limit must be >= 1, got {cfg.limit}")
    if cfg.split not in ("train", "val", "test"):
        raise WbcEdgeError(f"split must be train, val or test, got {cfg.split!r}")
    from .bench_mediapipe import CLIENTS

    unknown = [c for c in cfg.clients if c not in CLIENTS]
    if unknown:
        raise WbcEdgeError(f"unknown client(s) {', '.join(unknown)} (known: {', '.join(CLIENTS)})")


def run_bench(cfg: BenchConfig, *, reporter: Reporter | None = None,
              log: Callable[[str], None] | None = None) -> dict:
    """Run the parity + latency benchmark; return the result dict (see the module docstring)."""
    from .preprocess import preprocess
    from .runtime import Classifier

    rep = reporter or (_PrintReporter(log) if log else Reporter())
    t_start = time.perf_counter()
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _validate(cfg)
    if "mediapipe" in cfg.clients:
        from .bench_mediapipe import import_mediapipe

        import_mediapipe()  # fail before any work when it is not installed
    threads = list(dict.fromkeys(int(t) for t in cfg.threads))
    notes: list[str] = []
    models, ref = _resolve_models(cfg, notes)
    paths, labels, data_info = _load_data(cfg, notes)
    rels = data_info.pop("_rels")

    # input sizes: from the tflite tensors (contract checked by Classifier) and the .keras config
    for m in models:
        if m.kind == "tflite":
            clf = Classifier(m.path, num_threads=max(threads), use_xnnpack=cfg.use_xnnpack)
            m.input_size, m.labels = clf.input_size, list(clf.labels)
            m.input_dtype = str(clf.input_dtype)
            del clf
    if ref.kind == "keras" and ref.input_size is None:
        sizes = [m.input_size for m in models if m.kind == "tflite"]
        ref.input_size = max(set(sizes), key=sizes.count)
        notes.append(f"{ref.path}: input size not found in its config.json; assuming {ref.input_size}")
    sizes = sorted({int(m.input_size) for m in models})
    want_ttfp = cfg.ttfp if cfg.ttfp is not None else ref.kind == "keras"

    n = len(paths)
    per_variant = cfg.warmup + cfg.runs + cfg.batch_throughput_images
    total = (n * len(sizes) + n * len(models) + per_variant * len(threads) * len(models)
             + (2 if want_ttfp else 0) + n * len([m for m in models if m.kind == "tflite"]) * len(cfg.clients))
    where = f"split {cfg.split} of {cfg.split_manifest}" if cfg.split_manifest else str(cfg.data)
    rep.log(f"{len(models)} model(s) x {len(threads)} thread setting(s) on {n} images ({where})")
    rep.start(total)
    try:
        # 1. preprocess each image once per input size
        rep.stage("preprocess")
        t0 = time.perf_counter()
        cache: dict[int, np.ndarray] = {s: np.empty((n, s, s, 3), dtype=np.uint8) for s in sizes}
        keep = np.ones(n, dtype=bool)
        skipped = []
        for i, p in enumerate(paths):
            for s in sizes:
                try:
                    cache[s][i] = preprocess(p, s)
                except BadImageError as exc:
                    keep[i] = False
                    skipped.append({"path": rels[i], "reason": exc.reason})
                    break
            rep.advance(len(sizes))
        if not keep.all():
            paths = [p for p, k in zip(paths, keep) if k]  # noqa: B905
            rels = [r for r, k in zip(rels, keep) if k]  # noqa: B905
            labels = labels[keep]
            cache = {s: a[keep] for s, a in cache.items()}
            notes.append(f"{len(skipped)} image(s) could not be read and were skipped")
        if len(paths) == 0:
            raise DatasetError(f"{cfg.data}: none of the selected images could be read")
        preprocess_s = time.perf_counter() - t0
        data_info.update(n_images=len(paths), skipped=skipped,
                         class_counts={c: int((labels == i).sum()) for i, c in enumerate(CLASSES)},
                         images_sha256=hashlib.sha256("".join(f"{r},{CLASSES[int(y)]}\n" for r, y in
                                                              zip(rels, labels)).encode()).hexdigest())  # noqa: B905
        n = len(paths)

        # 2. accuracy: each variant predicts each image once
        tmp = Path(tempfile.mkdtemp(prefix="wbc_bench_"))
        keras_timings: dict[int, dict] = {}
        try:
            for m in models:
                rep.stage(f"predict {m.name}")
                px = cache[int(m.input_size)]
                if m.kind == "tflite":
                    clf = Classifier(m.path, num_threads=max(threads), use_xnnpack=cfg.use_xnnpack)
                    chunks = []
                    for a in range(0, n, 32):
                        chunks.append(clf.predict_pixels(px[a:a + 32]))
                        rep.advance(min(32, n - a))
                    # model output columns -> CLASSES order, by the model's own (embedded) labels
                    m.probs = np.concatenate(chunks)[:, clf.output_order()]
                    del clf
                else:
                    pix_file = tmp / f"pixels_{m.input_size}.npy"
                    np.save(pix_file, px)
                    first = True
                    for t in threads if cfg.keras_timing else threads[:1]:
                        rep.stage(f"keras {t} thr")
                        rec = _run_keras_worker(cfg, m.path, pix_file, t, tmp, probs=first,
                                                timing=cfg.keras_timing)
                        if first:
                            m.probs = np.load(tmp / "keras_probs.npy")  # float32, CLASSES order
                            if m.probs.shape[1] != len(CLASSES):
                                raise ModelFileError(f"{m.path}: outputs {m.probs.shape[1]} classes, "
                                                     f"expected {len(CLASSES)} ({', '.join(CLASSES)})")
                            rep.advance(n)
                            first = False
                        if cfg.keras_timing:
                            keras_timings[t] = rec
                            rep.advance(per_variant)
                    m.input_dtype = "float32"
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

        # 3. latency per variant per thread count
        for m in models:
            if m.kind == "keras":
                for t in threads:
                    if t in keras_timings:
                        m.latency.append(_keras_latency_record(keras_timings[t], cfg))
                continue
            for t in threads:
                rep.stage(f"time {m.name} {t} thr")
                m.latency.append(_time_tflite(m, t, cache[int(m.input_size)], cfg, rep))

        # 4. time to first prediction
        ttfp = None
        if want_ttfp:
            rep.stage("time to first prediction")
            tfl = [m for m in models if m.kind == "tflite"]
            rt = next((m for m in tfl if m.variant == "int8"), tfl[0] if tfl else None)
            ttfp = []
            if rt is not None:
                ttfp.append(_ttfp(cfg, "runtime", rt.path, paths[0]))
            rep.advance(1)
            if ref.kind == "keras":
                ttfp.append(_ttfp(cfg, "keras", ref.path, paths[0]))
            else:
                notes.append("time to first prediction: no .keras reference, only the runtime path was timed")
            rep.advance(1)

        # 4b. clients (MediaPipe Tasks): the same files as an app runs them
        clients = None
        if "mediapipe" in cfg.clients:
            from .bench_mediapipe import run_mediapipe_client

            rep.stage("mediapipe client")
            clients = {"mediapipe": run_mediapipe_client(models, paths, labels, rels, cache,
                                                         advance=rep.advance)}
    finally:
        rep.finish()

    # 5. parity + result
    variants = []
    tfl_lat = [lat for m in models if m.kind == "tflite" for lat in m.latency]
    backend = tfl_lat[0]["backend"] if tfl_lat else None
    backend_version = tfl_lat[0]["backend_version"] if tfl_lat else None
    for m in models:
        variants.append({
            "name": m.name, "path": str(m.path), "kind": m.kind, "is_reference": m.is_reference,
            "variant": m.variant if m.kind == "tflite" else "keras", "input_size": int(m.input_size),
            "input_dtype": m.input_dtype, "size_mb": m.path.stat().st_size / 1e6,
            "sha256": sha256_file(m.path),
            "labels": m.labels if m.labels is not None else list(CLASSES),
            "parity": _parity(m, ref, labels, rels), "export_parity": m.export_parity, "latency": m.latency})
    reference = {"name": ref.name, "path": str(ref.path), "kind": ref.kind,
                 "how": "given with --reference" if cfg.reference is not None else
                        ("the float32 .tflite among MODELS" if ref.variant == "float32" or
                         ref.path.stem.endswith("float32") else "the first of MODELS"),
                 "export_parity": ref.export_parity if ref.kind == "tflite" else None,
                 "export_parity_reference": _export_record(ref.path)[1] if ref.kind == "tflite" else None}
    sysinfo = system_info(cfg.device_name)
    software = _software(backend, backend_version)
    if ref.kind == "keras":
        k = next(iter(keras_timings.values()), None)
        if k:
            software["tensorflow"] = k.get("tensorflow")
            software["tf_keras"] = k.get("tf_keras")
    result = {
        "schema_version": SCHEMA_VERSION, "kind": RESULT_KIND, "source": "wbc-edge bench", "created": created,
        "system": sysinfo, "software": software, "config": cfg.to_dict(), "data": data_info,
        "reference": reference, "variants": variants, "rows": [], "ttfp": ttfp,
        "memory": {"process_peak_rss_mb": _peak_rss_mb(), "note": RSS_NOTE},
        "gate": None, "clients": clients, "domains": _domains(cfg, models, ref, rep),
        "notes": notes + [LATENCY_NOTE, XNNPACK_NOTE],
        "timings": {"preprocess_s": preprocess_s, "total_s": None},
    }
    result["rows"] = _rows(result)
    fails = gate_failures(result)
    result["gate"] = {"max_accuracy_drop_pp": cfg.max_accuracy_drop, "min_agreement_pct": cfg.min_agreement,
                      "checked": cfg.max_accuracy_drop is not None or cfg.min_agreement is not None,
                      "passed": not fails, "failures": fails}
    result["timings"]["total_s"] = time.perf_counter() - t_start
    return result


def _keras_latency_record(rec: dict, cfg: BenchConfig) -> dict:
    out = {"threads": rec["threads"], "backend": "tensorflow (Keras eager call)",
           "backend_version": rec.get("tensorflow"), "xnnpack": False, "delegate": None,
           "load_ms": rec["load_s"] * 1e3, "warmup": rec["warmup"], "runs": rec["runs"],
           **latency_stats(rec["times_s"]), "throughput_images": rec["batch_images"],
           "throughput_img_s": rec.get("throughput_img_s"), "rss_before_mb": None,
           "rss_after_mb": rec.get("rss_mb"), "process_peak_rss_mb": rec.get("peak_rss_mb")}
    out["import_s"] = rec.get("import_s")
    out["intra_op_threads"] = rec.get("intra_op_threads")
    out["inter_op_threads"] = rec.get("inter_op_threads")
    out["note"] = ("own process: TF intra-op threads = threads, inter-op threads = 1; "
                   "model(x, training=False) on a (1,S,S,3) float32 batch")
    return out


def _rows(result: dict) -> list[dict]:
    sysinfo, rows = result["system"], []
    for v in result["variants"]:
        p = v.get("parity") or {}
        for lat in v.get("latency") or [{}]:
            rows.append({
                "device": sysinfo.get("device"), "arch": sysinfo.get("arch"), "cpu": sysinfo.get("cpu"),
                "os": sysinfo.get("os"), "backend": lat.get("backend"),
                "backend_version": lat.get("backend_version"),
                "variant": v["name"], "kind": v["kind"], "is_reference": v["is_reference"],
                "size_mb": v.get("size_mb"), "accuracy": p.get("accuracy"),
                "delta_accuracy_pp": None if v["is_reference"] else p.get("delta_accuracy_pp"),
                "agreement_pct": None if v["is_reference"] else p.get("agreement_pct"),
                "threads": lat.get("threads"), "p50_ms": lat.get("p50_ms"), "p90_ms": lat.get("p90_ms"),
                "mean_ms": lat.get("mean_ms"), "img_s": lat.get("throughput_img_s"),
                "load_ms": lat.get("load_ms"), "xnnpack": lat.get("xnnpack")})
    return rows


# --------------------------------------------------------------------------------------------- output

def _f(x, fmt: str, none: str = "-") -> str:
    return none if x is None else format(x, fmt)


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _main_rows(rows: list[dict], with_device: bool) -> tuple[list[str], list[list[str]]]:
    header = ["Variant", "Size MB", "Acc", "ΔAcc pp", "Agree", "p50 ms", "p90 ms", "img/s", "threads"]
    if with_device:
        header = ["Device", "Arch", "CPU", "Backend"] + header
    body = []
    for r in rows:
        ref = r.get("is_reference")
        cells = [r["variant"] + (" (ref)" if ref else ""), _f(r.get("size_mb"), ".2f"),
                 _f(None if r.get("accuracy") is None else 100 * r["accuracy"], ".2f", "n/a") + (
                     "%" if r.get("accuracy") is not None else ""),
                 "ref" if ref else _f(r.get("delta_accuracy_pp"), "+.2f", "n/a"),
                 "ref" if ref else (_f(r.get("agreement_pct"), ".1f", "n/a") +
                                    ("%" if r.get("agreement_pct") is not None else "")),
                 _f(r.get("p50_ms"), ".2f"), _f(r.get("p90_ms"), ".2f"), _f(r.get("img_s"), ".1f"),
                 _f(r.get("threads"), "d")]
        if with_device:
            backend = " ".join(x for x in (r.get("backend"), r.get("backend_version")) if x)
            cells = [r.get("device") or "-", r.get("arch") or "-", r.get("cpu") or "-",
                     backend or "-"] + cells
        body.append(cells)
    return header, body


def to_markdown(result: dict) -> str:
    """A Markdown report of a run_bench result (or of a `merge` result: the cross-device table)."""
    if result.get("kind") == MERGE_KIND:
        header, body = _main_rows(result["rows"], with_device=True)
        lines = ["# wbc-edge bench: merged results", ""] + _table(header, body) + [""]
        lines += ["Sources:", ""]
        lines += [f"- {s['file']}: {s['device']} ({s['arch']}), {s['source']}, {s['created']}"
                  for s in result["sources"]]
        if result.get("notes"):
            lines += [""] + [f"- {n}" for n in result["notes"]]
        return "\n".join(lines) + "\n"

    s, sw = result["system"], result["software"]
    d = result.get("data") or {}  # None in a result converted from benchmark_model (random inputs)
    lines = ["# wbc-edge bench", ""]
    lines.append(f"- Device: **{s.get('device')}** - {s.get('cpu')} ({s.get('arch')}), {s.get('os')}, "
                 f"{s.get('usable_cpus')} usable CPUs; flags: {', '.join(s.get('cpu_flags') or []) or '-'}")
    lines.append(f"- Software: Python {sw.get('python')}, numpy {sw.get('numpy')}, "
                 f"{sw.get('runtime_backend')} {sw.get('runtime_backend_version')}"
                 + (f", TensorFlow {sw['tensorflow']}" if sw.get("tensorflow") else "")
                 + f"; XNNPACK {'on' if result['config'].get('use_xnnpack', True) else 'OFF'}")
    if not d:
        lines.append("- Data: none (latency on random inputs only, no accuracy)")
    else:
        if d.get("split_manifest"):
            what = f"split `{d['split']}` of {d['split_manifest']} (root {d['root']})"
        else:
            what = f"all valid images under {d.get('root')}"
        lines.append(f"- Data: {what}: {d.get('n_images')} images"
                     + (f" (limit {d['limit']})" if d.get("limit") else "")
                     + f"; sha256 {str(d.get('sha256'))[:16]}… ({d.get('sha256_of')})")
    ref = result.get("reference") or {}
    if ref:
        lines.append(f"- Reference: **{ref.get('name')}** ({ref.get('path')}), {ref.get('how')}")
        ep = ref.get("export_parity") or {}
        if ep.get("parity"):
            p = ep["parity"]
            lines.append(f"  - its Keras parity at export ({ep.get('manifest')}): "
                         f"agreement {p.get('agreement_pct', float('nan')):.2f}%, "
                         f"Δacc {p.get('delta_accuracy_pp', float('nan')):+.2f} pp, "
                         f"max |Δp| {p.get('max_abs_dprob', float('nan')):.2e} on {p.get('n')} images")
        elif ref.get("kind") == "tflite":
            lines.append("  - no export manifest.json beside it: its parity with Keras is not recorded here")
    lines.append(f"- Created {result.get('created')}; {result['config'].get('runs')} timed runs after "
                 f"{result['config'].get('warmup')} warm-up calls")
    lines.append("")
    header, body = _main_rows(result["rows"], with_device=False)
    lines += _table(header, body) + [""]

    # parity details
    lines += ["## Parity with the reference", ""]
    pbody = []
    for v in result["variants"]:
        p = v.get("parity") or {}
        if not p:
            continue
        worst = min(p["per_class_recall_delta_pp"].items(), key=lambda kv: kv[1]) if p.get(
            "per_class_recall_delta_pp") else ("-", 0.0)
        pbody.append([v["name"] + (" (ref)" if v["is_reference"] else ""), f"{100 * p['accuracy']:.2f}%",
                      f"{100 * p['balanced_accuracy']:.2f}%", f"{p['macro_f1']:.4f}",
                      f"{p['mean_abs_dprob']:.2e}", f"{p['max_abs_dprob']:.2e}",
                      f"{p['n_disagreements']}/{p['n']}",
                      "-" if v["is_reference"] else f"{worst[0]} {worst[1]:+.1f}"])
    lines += _table(["Variant", "Acc", "Bal. acc", "Macro-F1", "mean |Δp|", "max |Δp|", "disagree",
                     "worst recall Δ pp"], pbody) + [""]
    dis_lines = []
    for v in result["variants"]:
        p = v.get("parity") or {}
        for dd in (p.get("disagreements") or [])[:10]:
            dis_lines.append([v["name"], dd["path"], dd["true"],
                              f"{dd['reference_label']} {dd['reference_conf']:.2f}",
                              f"{dd['variant_label']} {dd['variant_conf']:.2f}"])
    if dis_lines:
        lines += ["Disagreements with the reference (first 10 per variant; all in the JSON):", ""]
        lines += _table(["Variant", "Image", "True", "Reference", "Variant"], dis_lines) + [""]

    # latency details
    lines += ["## Latency details", ""]
    lbody = []
    for v in result["variants"]:
        for lat in v.get("latency") or []:
            dlg = lat.get("delegate") or {}
            dtxt = "-"
            if dlg:
                dtxt = f"{dlg['ops_delegated']}/{dlg['ops_total']} ops, {dlg['partitions']} part."
                if dlg.get("not_delegated"):
                    dtxt += " (not: " + ", ".join(f"{k}×{c}" for k, c in dlg["not_delegated"].items()) + ")"
            lbody.append([v["name"], lat["threads"], _f(lat.get("load_ms"), ".1f"),
                          f"{_f(lat.get('mean_ms'), '.2f')} ± {_f(lat.get('std_ms'), '.2f')}",
                          _f(lat.get("p99_ms"), ".2f"), _f(lat.get("min_ms"), ".2f"),
                          _f(lat.get("rss_after_mb"), ".0f"), _f(lat.get("process_peak_rss_mb"), ".0f"),
                          dtxt])
    lines += _table(["Variant", "threads", "load ms", "mean ± std ms", "p99 ms", "min ms", "RSS after MB",
                     "peak RSS MB", "XNNPACK delegation"], lbody) + [""]

    if result.get("ttfp"):
        lines += ["## Time to first prediction (fresh process)", ""]
        tb = [[t["path"], Path(t["model"]).name, _f(t.get("wall_s"), ".2f"), _f(t.get("in_process_s"), ".2f"),
               t.get("error") or t.get("what", "")] for t in result["ttfp"]]
        lines += _table(["Path", "Model", "wall s", "in-process s", "what"], tb) + [""]

    if (result.get("clients") or {}).get("mediapipe"):
        from .bench_mediapipe import markdown_section

        lines += markdown_section(result["clients"]["mediapipe"])

    if result.get("domains"):
        lines += ["## Other domains (all images; agreement with the reference)", ""]
        tb = []
        for d in result["domains"]["domains"]:
            for model, r in d["results"].items():
                tb.append([Path(model).name, d["name"], str(r["n"]), _f(100 * r["accuracy"], ".1f"),
                           _f(100 * r["balanced_accuracy"], ".1f"),
                           _f(r.get("agreement_pct"), ".2f"), str(r.get("flips", "-"))])
        lines += _table(["Variant", "Domain", "n", "Acc %", "Bal. acc %", "Agree %", "Flips"], tb) + [""]

    g = result.get("gate") or {}
    if g.get("checked"):
        lines += ["## Gate", ""]
        lines.append(f"max accuracy drop {_f(g.get('max_accuracy_drop_pp'), 'g', 'unchecked')} pp, "
                     f"min agreement {_f(g.get('min_agreement_pct'), 'g', 'unchecked')}%: "
                     + ("**passed**" if g.get("passed") else "**FAILED**"))
        for f_ in g.get("failures", []):
            lines.append(f"- {f_['variant']}: {f_['reason']}")
        lines.append("")
    if result.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    return "\n".join(lines)


def plot(result: dict, path: str | os.PathLike) -> Path:
    """Accuracy vs p50 latency (one point per variant, at the first thread count) as a PNG, atomically.

    Raises WbcEdgeError when matplotlib is not installed (runtime-only installs).
    """
    from .atomic import atomic_path
    from .evaluate import _pyplot

    plt = _pyplot()
    pts = []
    for v in result["variants"]:
        lat = (v.get("latency") or [None])[0]
        p = v.get("parity")
        if lat is None or p is None or lat.get("p50_ms") is None:
            continue
        pts.append((v["name"] + (" (ref)" if v["is_reference"] else ""), lat["p50_ms"], 100 * p["accuracy"],
                    lat["threads"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    try:
        # A colour-coded legend rather than labels next to the points: int8/QAT (and float32/float16)
        # nearly coincide, and stacked labels would end up next to the wrong point.
        for name, x, y, _ in sorted(pts, key=lambda t: t[1]):
            ax.scatter([x], [y], s=45, label=f"{name}: {y:.2f} %, {x:.2f} ms")
        if pts:
            ax.legend(fontsize=8, loc="lower right", framealpha=0.9)
        xs = [x for _, x, _, _ in pts]
        ys = [y for _, _, y, _ in pts]
        if ys:
            lo = min(ys)
            bottom = max(0.0, lo - max(2.0, 0.2 * (100 - lo)))
            ax.set_ylim(bottom, max(ys) + 0.15 * (max(ys) - bottom) + 0.3)
        if xs and min(xs) > 0 and max(xs) / min(xs) > 8:
            from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, 50 ms
            ax.xaxis.set_major_formatter(ScalarFormatter())  # plain numbers instead of 10^0 ...
            ax.xaxis.set_minor_formatter(NullFormatter())    # minor labels overprinted each other
        thr = sorted({t for *_, t in pts})
        ax.set_xlabel(f"p50 latency per image (ms, {', '.join(map(str, thr))} thread(s))")
        ax.set_ylabel("accuracy (%)")
        s = result.get("system", {})
        ax.set_title(f"wbc-edge bench: {s.get('device', '')} ({s.get('arch', '')})", fontsize=10)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        out = Path(path)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return out


def write_outputs(result: dict, *, json_path=None, markdown_path=None) -> None:
    """Write the JSON and/or Markdown report atomically."""
    from .atomic import write_json, write_text

    if json_path is not None:
        write_json(json_path, result)
    if markdown_path is not None:
        write_text(markdown_path, to_markdown(result))


def load_result(path: str | os.PathLike) -> dict:
    """Read a bench result JSON (ours or converted from benchmark_model); checks kind and schema_version."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WbcEdgeError(f"{p}: result file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WbcEdgeError(f"{p}: not a readable JSON result ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != RESULT_KIND:
        kind = data.get("kind") if isinstance(data, dict) else None
        raise WbcEdgeError(f"{p}: not a wbc-edge bench result (kind {kind!r})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise WbcEdgeError(f"{p}: schema_version {data.get('schema_version')} is not supported "
                           f"(this wbc-edge reads {SCHEMA_VERSION})")
    return data


def merge(results: Sequence[dict | str | os.PathLike]) -> dict:
    """Combine several results (dicts or JSON paths, from any device) into one table: {kind, rows, sources}.

    Rows keep the order of the files given and, within a file, its variant x threads order.
    `to_markdown(merge(...))` renders it with Device / Arch / CPU / Backend columns.
    """
    rows, sources, notes = [], [], []
    for r in results:
        name = str(r) if not isinstance(r, dict) else "<dict>"
        data = r if isinstance(r, dict) else load_result(r)
        s = data.get("system", {})
        sources.append({"file": name, "device": s.get("device"), "arch": s.get("arch"), "cpu": s.get("cpu"),
                        "source": data.get("source"), "created": data.get("created")})
        rows.extend(data.get("rows", []))
        for v in data.get("variants", []):
            if v.get("parity") is None:
                notes.append(f"{s.get('device')}: {v['name']} has no accuracy numbers "
                             f"({data.get('source')} times random inputs only)")
    return {"schema_version": SCHEMA_VERSION, "kind": MERGE_KIND,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "sources": sources, "rows": rows, "notes": notes}
