"""`run_bench`: one bench run from a BenchConfig to a result dict - the order of the steps and nothing else.

1. resolve the models and the reference (`models`), read their labels and input sizes;
2. select the images in the reference's label order (`data`) and preprocess each once per input size;
3. every model predicts every image once (the .keras reference in `keras_worker` processes);
4. time every .tflite at every thread count (`timing`), then time to first prediction (`ttfp_worker`),
   clients (`mediapipe_client`) and other domains (`wbc_edge.bench.crossdomain`) when asked for;
5. parity with the reference (`parity`), the row table (`schema`) and the gate (`gate`).

Progress goes through `wbc_edge.core.progress.Progress` only (the CLI passes its click implementation).
TensorFlow-free: only the worker processes of a .keras reference import it.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.atomic import sha256_file
from ..core.errors import BadImageError, DatasetError, ModelFileError
from ..core.labels import Labels
from ..core.progress import Progress, resolve
from .config import BenchConfig, validate_config
from .data import BenchImages, model_split_overlap, select_images
from .gate import gate_record
from .models import BenchModel, reference_how, resolve_models, variant_spec
from .parity import variant_parity
from .schema import LATENCY_NOTE, RESULT_KIND, RSS_NOTE, SCHEMA_VERSION, XNNPACK_NOTE, result_rows
from .sysinfo import peak_rss_mb, software_versions, system_info
from .timing import keras_latency_record, time_tflite
from .workers import run_keras_worker, run_ttfp

__all__ = ["run_bench"]


def run_bench(cfg: BenchConfig, *, progress: Progress | bool | None = None) -> dict:
    """Run the parity + latency benchmark; return the result dict (see `wbc_edge.bench`)."""
    progress = resolve(progress)
    t_start = time.perf_counter()
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    validate_config(cfg)
    if "mediapipe" in cfg.clients:
        from .mediapipe_client import import_mediapipe

        import_mediapipe()  # fail before any work when it is not installed
    threads = list(dict.fromkeys(int(t) for t in cfg.threads))
    notes: list[str] = []
    models, ref = resolve_models(cfg, notes)
    labels = _inspect_models(models, ref, cfg, threads, notes)
    images = select_images(cfg, labels, notes)
    model_split_overlap(images, [m.path for m in models if m.kind == "tflite"], notes)
    want_ttfp = cfg.ttfp if cfg.ttfp is not None else ref.kind == "keras"
    where = f"split {cfg.split} of {cfg.split_manifest}" if cfg.split_manifest else str(cfg.data)
    progress.say(f"{len(models)} model(s) x {len(threads)} thread setting(s) on {len(images.paths)} images "
                 f"({where})")

    t0 = time.perf_counter()
    plain = _preprocess(images, sorted({int(m.input_size) for m in models}), notes, progress)
    preprocess_s = time.perf_counter() - t0
    pixels, guard_info = _guard(plain, ref, cfg, images)
    images.info.update(n_images=len(images.paths),
                       class_counts={c: int((images.y == i).sum()) for i, c in enumerate(labels)},
                       images_sha256=_images_sha256(images))
    keras_timings = _predict(models, pixels, cfg, threads, labels, progress)
    _time_all(models, pixels, cfg, threads, keras_timings, progress)
    ttfp = _time_to_first_prediction(models, ref, images, cfg, notes, progress) if want_ttfp else None
    clients = None
    if "mediapipe" in cfg.clients:
        from .mediapipe_client import run_mediapipe_client

        n_tfl = sum(m.kind == "tflite" for m in models)
        with progress.task(len(images.paths) * n_tfl, "MediaPipe client") as advance:
            clients = {"mediapipe": run_mediapipe_client(models, images.paths, images.y, images.rels, plain,
                                                         labels=list(labels), advance=advance)}
    domains = _domains(cfg, models, ref, labels, progress)
    images.info["scale_guard"] = guard_info

    tfl_lat = [lat for m in models if m.kind == "tflite" for lat in m.latency]
    software = software_versions(tfl_lat[0]["backend"] if tfl_lat else None,
                                 tfl_lat[0]["backend_version"] if tfl_lat else None)
    k = next(iter(keras_timings.values()), None)
    if k:
        software["tensorflow"], software["tf_keras"] = k.get("tensorflow"), k.get("tf_keras")
    result = {
        "schema_version": SCHEMA_VERSION, "kind": RESULT_KIND, "source": "wbc-edge bench", "created": created,
        "system": system_info(cfg.device_name), "software": software, "config": cfg.to_dict(),
        "data": images.info, "reference": _reference_record(cfg, ref),
        "variants": [_variant_record(m, ref, images, labels) for m in models], "rows": [], "ttfp": ttfp,
        "memory": {"process_peak_rss_mb": peak_rss_mb(), "note": RSS_NOTE},
        "gate": None, "clients": clients, "domains": domains, "notes": notes + [LATENCY_NOTE, XNNPACK_NOTE],
        "timings": {"preprocess_s": preprocess_s, "total_s": None},
    }
    result["rows"] = result_rows(result)
    result["gate"] = gate_record(result)
    result["timings"]["total_s"] = time.perf_counter() - t_start
    return result


def _inspect_models(models: list[BenchModel], ref: BenchModel, cfg: BenchConfig, threads: list[int],
                    notes: list[str]) -> Labels:
    """Input sizes, dtypes and labels of every model; the bench's labels = the reference's output order.
    Every .tflite must have the reference's classes (in any order: outputs are mapped by name)."""
    from ..runtime import Classifier

    classifiers = {}
    for m in models:
        if m.kind == "tflite":
            clf = classifiers[m.name] = Classifier(m.path, num_threads=max(threads), use_xnnpack=cfg.use_xnnpack)
            m.input_size, m.labels, m.input_dtype = clf.input_size, list(clf.labels), str(clf.input_dtype)
    if ref.kind == "keras":
        from ..data.run_files import model_labels

        ref.labels = model_labels(ref.path, cfg.split_manifest).to_list()
        notes.append(f"{ref.path}: labels {', '.join(ref.labels)} (stored by its run: run.json beside it, else "
                     "its split manifest; the five WBC classes for runs made before labels were stored)")
        ref.input_dtype = "float32"
        if ref.input_size is None:
            sizes = [m.input_size for m in models if m.kind == "tflite"]
            if not sizes:
                raise ModelFileError(f"{ref.path}: input size not found in its config.json")
            ref.input_size = max(set(sizes), key=sizes.count)
            notes.append(f"{ref.path}: input size not found in its config.json; assuming {ref.input_size}")
    labels = Labels.from_list(ref.labels)
    for clf in classifiers.values():
        clf.output_order(labels)  # ModelFileError naming both label lists when the classes differ
    return labels


def _preprocess(images: BenchImages, sizes: list[int], notes: list[str], progress: Progress) -> dict[int, np.ndarray]:
    """{input size: uint8 (N, S, S, 3)}: each image preprocessed once per size; unreadable ones dropped."""
    from ..data.scan import skipped_note
    from ..core.preprocess import preprocess

    n = len(images.paths)
    cache = {s: np.empty((n, s, s, 3), dtype=np.uint8) for s in sizes}
    keep = np.ones(n, dtype=bool)
    skipped = []
    with progress.task(n * len(sizes), "Preprocessing") as advance:
        for i, p in enumerate(images.paths):
            for s in sizes:
                try:
                    cache[s][i] = preprocess(p, s)
                except BadImageError as exc:
                    keep[i] = False
                    skipped.append({"path": images.rels[i], "reason": exc.reason})
                    break
            advance(len(sizes))
    images.info["skipped"] = skipped
    if not keep.all():
        images.keep(keep)
        cache = {s: a[keep] for s, a in cache.items()}
        notes.append(skipped_note(images.info["root"], skipped))
    if not images.paths:
        raise DatasetError(f"{images.info['root']}: none of the selected images could be read")
    return cache


def _guard(plain: dict[int, np.ndarray], ref: BenchModel, cfg: BenchConfig,
           images: BenchImages) -> tuple[dict[int, np.ndarray], dict | None]:
    """The pixels every model is fed: `plain` through the reference's scale guard (wbc_edge.core.scale_guard), as the
    runtime feeds them; and the record of it (how many images were magnified, its cost per image)."""
    guard = None
    if cfg.scale_guard:
        if ref.kind == "keras":
            from ..data.run_files import load_scale_guard

            guard = load_scale_guard(Path(ref.path).parent)
        else:  # the contract says it; no interpreter needed
            from ..core.contract import read_contract
            from ..core.scale_guard import ScaleGuard

            contract = read_contract(ref.path)
            guard = ScaleGuard.from_dict(contract.scale_guard) if contract and contract.scale_guard else None
    if guard is None:
        return plain, None
    from ..core.scale_guard import guard_batch

    out, info = {}, {}
    for size, px in plain.items():
        t = time.perf_counter()
        out[size], zooms = guard_batch(px, guard)
        info = {**guard.to_dict(), "magnified": int(np.sum(zooms != 1.0)), "n": int(len(zooms)),
                "ms_per_image": round(1e3 * (time.perf_counter() - t) / max(1, len(zooms)), 2)}
    return out, info


def _images_sha256(images: BenchImages) -> str:
    import hashlib

    listing = "".join(f"{r},{images.labels[int(y)]}\n" for r, y in zip(images.rels, images.y))  # noqa: B905
    return hashlib.sha256(listing.encode()).hexdigest()


def _predict(models: list[BenchModel], pixels: dict[int, np.ndarray], cfg: BenchConfig, threads: list[int],
             labels: Labels, progress: Progress) -> dict[int, dict]:
    """m.probs for every model, columns in `labels` order; the Keras worker records per thread count."""
    from ..runtime import Classifier

    n = len(next(iter(pixels.values())))
    keras_timings: dict[int, dict] = {}
    with progress.task(n * len(models), "Predicting") as advance:
        for m in models:
            px = pixels[int(m.input_size)]
            if m.kind == "tflite":
                clf = Classifier(m.path, num_threads=max(threads), use_xnnpack=cfg.use_xnnpack)
                chunks = []
                for a in range(0, n, 32):
                    chunks.append(clf.predict_pixels(px[a:a + 32]))
                    advance(min(32, n - a))
                # model output columns -> the bench's label order, by the model's own (embedded) labels
                m.probs = np.concatenate(chunks)[:, clf.output_order(labels)]
                continue
            keras_timings = _keras(m, px, cfg, threads, labels)
            advance(n)
    return keras_timings


def _keras(m: BenchModel, px: np.ndarray, cfg: BenchConfig, threads: list[int], labels: Labels) -> dict[int, dict]:
    """The .keras reference: probabilities from the first worker, timings from one worker per thread count."""
    tmp = Path(tempfile.mkdtemp(prefix="wbc_bench_"))
    timings: dict[int, dict] = {}
    try:
        pix_file = tmp / f"pixels_{m.input_size}.npy"
        np.save(pix_file, px)
        for i, t in enumerate(threads if cfg.keras_timing else threads[:1]):
            rec = run_keras_worker(cfg, m.path, pix_file, t, tmp, probs=i == 0, timing=cfg.keras_timing)
            if i == 0:
                m.probs = np.load(tmp / "keras_probs.npy")  # float32, the model's own output order
                if m.probs.shape[1] != len(labels):
                    raise ModelFileError(f"{m.path}: outputs {m.probs.shape[1]} classes, but its labels "
                                         f"({', '.join(labels)}) are {len(labels)}")
            if cfg.keras_timing:
                timings[t] = rec
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return timings


def _time_all(models: list[BenchModel], pixels: dict[int, np.ndarray], cfg: BenchConfig, threads: list[int],
              keras_timings: dict[int, dict], progress: Progress) -> None:
    """m.latency: one record per thread count (the .keras reference's from its worker records)."""
    per_variant = cfg.warmup + cfg.runs + cfg.batch_throughput_images
    n_tfl = sum(m.kind == "tflite" for m in models)
    with progress.task(per_variant * len(threads) * n_tfl, "Timing") as advance:
        for m in models:
            if m.kind == "keras":
                m.latency = [keras_latency_record(keras_timings[t]) for t in threads if t in keras_timings]
                continue
            for t in threads:
                m.latency.append(time_tflite(m.path, t, pixels[int(m.input_size)], cfg, advance))


def _time_to_first_prediction(models: list[BenchModel], ref: BenchModel, images: BenchImages, cfg: BenchConfig,
                              notes: list[str], progress: Progress) -> list[dict]:
    """Fresh-process timings: the runtime on the recommended variant (else the first .tflite), and Keras."""
    progress.say("Time to first prediction (fresh processes)")
    tfl = [m for m in models if m.kind == "tflite"]
    rt = next((m for m in tfl if (variant_spec(m) is not None and variant_spec(m).recommended)),
              tfl[0] if tfl else None)
    out = []
    if rt is not None:
        out.append(run_ttfp(cfg, "runtime", rt.path, images.paths[0]))
    if ref.kind == "keras":
        out.append(run_ttfp(cfg, "keras", ref.path, images.paths[0]))
    else:
        notes.append("time to first prediction: no .keras reference, only the runtime path was timed")
    return out


def _domains(cfg: BenchConfig, models: list[BenchModel], ref: BenchModel, labels: Labels,
             progress: Progress) -> dict | None:
    """Per-domain accuracy and agreement with the reference on cfg.domains (None without domains)."""
    if not cfg.domains:
        return None
    from .crossdomain import CrossDomainConfig, Domain, run_report

    doms = []
    for spec in cfg.domains:
        name, sep, root = str(spec).partition("=")
        doms.append(Domain(root=root, name=name) if sep else Domain(root=name))
    paths = [str(m.path) for m in models if m.kind == "tflite" or m.is_reference]
    progress.say(f"Other domains: {', '.join(d.label for d in doms)}")
    return run_report(CrossDomainConfig(models=paths, domains=doms, reference=str(ref.path),
                                        min_agreement=cfg.min_agreement, labels=list(labels)), progress=progress)


def _variant_record(m: BenchModel, ref: BenchModel, images: BenchImages, labels: Labels) -> dict:
    return {"name": m.name, "path": str(m.path), "kind": m.kind, "is_reference": m.is_reference,
            "variant": m.variant if m.kind == "tflite" else "keras", "input_size": int(m.input_size),
            "input_dtype": m.input_dtype, "size_mb": m.path.stat().st_size / 1e6, "sha256": sha256_file(m.path),
            "labels": list(m.labels), "parity": variant_parity(m.probs, ref.probs, images.y, labels, images.rels),
            "export_parity": m.export_parity, "latency": m.latency}


def _reference_record(cfg: BenchConfig, ref: BenchModel) -> dict:
    from .models import export_record

    return {"name": ref.name, "path": str(ref.path), "kind": ref.kind, "how": reference_how(cfg, ref),
            "export_parity": ref.export_parity if ref.kind == "tflite" else None,
            "export_parity_reference": export_record(ref.path)[1] if ref.kind == "tflite" else None}
