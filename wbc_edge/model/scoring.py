"""Score a reference Keras model on labelled images (a split of a manifest, or every image of a folder).

Separate from `wbc_edge.metrics` (pure numpy, TF-free, shared with the runtime and bench) because this half
runs the Keras model and so needs TensorFlow.  The class list is the model's: read from its run (run.json
`labels`, else the run's split manifest), and only for models made before labels were stored, the five
WBC classes every such model was trained on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError
from ..core.labels import Labels
from ..core.preprocess import preprocess
from ..core.progress import Progress, resolve
from ..core.scale_guard import ScaleGuard, guard_pixels
from .network import model_input_size


@dataclass
class EvalInputs:
    paths: list[str]
    labels: np.ndarray  # int64 class indices into `label_set`
    source: str  # description: "split.csv (test)" or "all valid images in DATA"
    label_set: Labels
    skipped: list[dict] = field(default_factory=list)  # [{path, reason}] of unreadable files left out


def collect_inputs(data_root: str, split: str, split_manifest: str | None, *, labels: Labels | None = None,
                   progress: Progress | bool | None = True) -> EvalInputs:
    """Images + labels to score: a split of a manifest, or (split='all') every valid image under data_root.

    `labels`: the model's classes (indices follow their order; a folder or row naming another class is a
    one-line DatasetError).  None: the data's own classes (the manifest's label set, or the folders)."""
    from ..data import SplitManifest, require_all_classes, scan_dataset

    if split == "all":
        scan = scan_dataset(data_root, labels=labels, progress=progress)
        paths = [str(Path(data_root) / r.path) for r in scan.records]
        # A cross-domain folder may lack a class: scored anyway (the metrics skip absent classes), but said.
        absent = scan.missing_classes
        return EvalInputs(paths, scan.label_indices(), f"all {len(paths)} valid images in {data_root}"
                          + (f" ({len(scan.bad)} bad files skipped)" if scan.bad else "")
                          + (f" (no images of: {', '.join(absent)})" if absent else ""), scan.labels,
                          [{"path": b.path, "reason": b.reason} for b in scan.bad])
    if not split_manifest:
        raise DatasetError(f"--split {split} needs a split manifest (--split-manifest, or a split.csv beside the "
                           "model); use --split all to score every image of DATA")
    manifest = SplitManifest.load(split_manifest, labels=labels)
    label_set = labels if labels is not None else manifest.label_set
    paths, y = manifest.files(split, data_root, labels=label_set)
    if len(paths) == 0:
        raise DatasetError(f"{split_manifest}: split '{split}' is empty")
    require_all_classes(y, f"{split_manifest}: split '{split}'", labels=label_set)
    manifest.verify(data_root)  # a manifest paired with the wrong data folder fails here, not mid-way
    return EvalInputs([str(p) for p in paths], y, f"{split_manifest} ({split})", label_set)




def predict_keras(model, paths: list[str], batch_size: int = 32,
                  progress: Progress | bool | None = True, guard: ScaleGuard | None = None) -> np.ndarray:
    """Softmax probabilities of a Keras model over image files, fed through the one preprocessing path (and the
    model's scale guard, when given: the pixels the runtime feeds)."""
    size = model_input_size(model)
    out = np.empty((len(paths), int(model.output_shape[-1])), dtype=np.float32)
    with resolve(progress).task(len(paths), "Predicting") as advance:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            x = np.stack([guard_pixels(preprocess(p, size), guard)[0] for p in chunk]).astype(np.float32)
            out[start:start + len(chunk)] = model(x, training=False).numpy()
            advance(len(chunk))
    return out


def evaluate_keras(model_path: str, data_root: str, *, split: str = "test", split_manifest: str | None = None,
                   out_dir: str | None = None, progress: Progress | bool | None = True):
    """Load the model safely, score it, save metrics.json + confusion.json/png; returns (Metrics, paths)."""
    from ..data.run_files import load_scale_guard, model_labels
    from ..metrics import compute_metrics, save_metrics
    from .network import check_classifier, check_model_file, load_model

    if split_manifest is None and split != "all":
        candidate = Path(model_path).parent / "split.csv"
        split_manifest = str(candidate) if candidate.exists() else None
    check_model_file(model_path)
    labels = model_labels(model_path, split_manifest)
    # The data first (a wrong folder or manifest fails in a second), TensorFlow's start-up only after.
    inputs = collect_inputs(data_root, split, split_manifest, labels=labels, progress=progress)
    model = load_model(model_path)
    check_classifier(model, model_path, labels)
    t = time.time()
    guard = load_scale_guard(Path(model_path).parent)  # as the exported model will run: see wbc_edge.core.scale_guard
    probs = predict_keras(model, inputs.paths, progress=progress, guard=guard)
    metrics = compute_metrics(inputs.labels, probs.argmax(1), labels)
    out = Path(out_dir) if out_dir else Path(model_path).parent / f"eval_{Path(data_root).name}_{split}"
    saved = save_metrics(metrics, out, extra={"model": str(model_path), "data": str(data_root),
                                               "source": inputs.source, "seconds": round(time.time() - t, 1),
                                               "scale_guard": guard.to_dict() if guard else None})
    return metrics, saved
