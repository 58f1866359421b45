"""Score a reference Keras model on an ImageFolder (a saved split, or every valid image).

Separate from `evaluate` (pure numpy metrics, TF-free, shared with the runtime and bench) because this
half needs TensorFlow to run the Keras model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import CLASSES
from .errors import DatasetError
from .preprocess import preprocess


@dataclass
class EvalInputs:
    paths: list[str]
    labels: np.ndarray
    source: str  # description: "split.csv (test)" or "all valid images in DATA"


def collect_inputs(data_root: str, split: str, split_manifest: str | None, *, progress: bool = True) -> EvalInputs:
    """Images + labels to score: a split of a manifest, or (split='all') every valid image under data_root."""
    from .data import SplitManifest, require_all_classes, scan_dataset

    if split == "all":
        scan = scan_dataset(data_root, progress=progress)
        paths = [str(Path(data_root) / r.path) for r in scan.records]
        labels = np.array([CLASSES.index(r.label) for r in scan.records], dtype=np.int64)
        # A cross-domain folder may lack a class: scored anyway (the metrics skip absent classes), but said.
        absent = scan.missing_classes
        return EvalInputs(paths, labels, f"all {len(paths)} valid images in {data_root}"
                          + (f" ({len(scan.bad)} bad files skipped)" if scan.bad else "")
                          + (f" (no images of: {', '.join(absent)})" if absent else ""))
    if not split_manifest:
        raise DatasetError(f"--split {split} needs a split manifest (--split-manifest, or a split.csv beside the "
                           "model); use --split all to score every image of DATA")
    manifest = SplitManifest.load(split_manifest)
    paths, labels = manifest.files(split, data_root)
    if len(paths) == 0:
        raise DatasetError(f"{split_manifest}: split '{split}' is empty")
    require_all_classes(labels, f"{split_manifest}: split '{split}'")
    manifest.verify(data_root)  # a manifest paired with the wrong data folder fails here, not mid-way
    return EvalInputs([str(p) for p in paths], np.asarray(labels, dtype=np.int64), f"{split_manifest} ({split})")


def predict_keras(model, paths: list[str], batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Softmax probabilities of a Keras model over image files, fed through the one preprocessing path."""
    import click

    size = int(model.input_shape[1])
    out = np.empty((len(paths), int(model.output_shape[-1])), dtype=np.float32)
    with click.progressbar(length=len(paths), label="Predicting", file=None if progress else _Null()) as bar:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            x = np.stack([preprocess(p, size) for p in chunk]).astype(np.float32)
            out[start:start + len(chunk)] = model(x, training=False).numpy()
            bar.update(len(chunk))
    return out


class _Null:
    def write(self, *_):
        pass

    def flush(self):
        pass

    def isatty(self):
        return False


def evaluate_keras(model_path: str, data_root: str, *, split: str = "test", split_manifest: str | None = None,
                   out_dir: str | None = None, progress: bool = True):
    """Load the model safely, score it, save metrics.json + confusion.json/png; returns (Metrics, paths)."""
    from .evaluate import compute_metrics, save_metrics
    from .model import check_classifier, load_model

    model = load_model(model_path)
    check_classifier(model, model_path)
    if split_manifest is None and split != "all":
        candidate = Path(model_path).parent / "split.csv"
        split_manifest = str(candidate) if candidate.exists() else None
    inputs = collect_inputs(data_root, split, split_manifest, progress=progress)
    t = time.time()
    probs = predict_keras(model, inputs.paths, progress=progress)
    metrics = compute_metrics(inputs.labels, probs.argmax(1), list(CLASSES))
    out = Path(out_dir) if out_dir else Path(model_path).parent / f"eval_{Path(data_root).name}_{split}"
    saved = save_metrics(metrics, out, extra={"model": str(model_path), "data": str(data_root),
                                               "source": inputs.source, "seconds": round(time.time() - t, 1)})
    return metrics, saved
