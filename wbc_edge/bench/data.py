"""The images a bench run scores: a split of a manifest, or every valid image of a folder, optionally limited.

Classes come from the models: the data is read in the reference model's label order
(`scan_dataset(root, labels=...)` / `SplitManifest.load(..., labels=...)`), so a 3- or 8-class model is
benchmarked on its own classes and a folder or manifest row outside them is an error naming it.
`limit` keeps a class-balanced subset drawn by the package's one sampler (`wbc_edge.data.sampling
.balanced_indices`: equal shares, each class in input order), the same on every machine.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import DatasetError
from ..core.labels import Labels

__all__ = ["BenchImages", "model_split_overlap", "select_images"]


@dataclass
class BenchImages:
    """Absolute paths, paths relative to the data root, class indices (in `labels` order) and the record
    of where they came from (`result["data"]`)."""

    paths: list[str]
    rels: list[str]
    y: np.ndarray
    labels: Labels
    info: dict = field(default_factory=dict)

    def keep(self, mask: np.ndarray) -> None:
        """Drop the images where `mask` is False (unreadable at preprocessing)."""
        self.paths = [p for p, k in zip(self.paths, mask) if k]  # noqa: B905 - same length
        self.rels = [r for r, k in zip(self.rels, mask) if k]  # noqa: B905 - same length
        self.y = self.y[mask]


def select_images(cfg, labels: Labels, notes: list[str]) -> BenchImages:
    """The images of a BenchConfig (`data`, `split_manifest`, `split`, `limit`) for models with `labels`."""
    if cfg.data is None:
        raise DatasetError("no data given: pass --data ROOT (an ImageFolder, or the root a split manifest's "
                           "paths are relative to)")
    root = Path(cfg.data)
    if not root.is_dir():
        raise DatasetError(f"{root}: data folder not found")
    from ..data import SplitManifest, balanced_indices, require_all_classes, scan_dataset

    info: dict = {"root": str(root), "split_manifest": None, "split": None}
    if cfg.split_manifest is not None:
        manifest = SplitManifest.load(cfg.split_manifest, labels=labels)
        paths, y = manifest.files(cfg.split, root, labels=labels)
        if not paths:
            raise DatasetError(f"{cfg.split_manifest}: split '{cfg.split}' is empty")
        require_all_classes(y, f"{cfg.split_manifest}: split '{cfg.split}'", labels=labels)
        manifest.verify(root)  # a manifest paired with the wrong data folder fails here, not as "skipped"
        info.update(split_manifest=str(cfg.split_manifest), split=cfg.split, sha256=manifest.sha256(),
                    sha256_of="split manifest (canonical bytes, as every stage records it)")
        rels = manifest.paths(cfg.split)
    else:
        scan = scan_dataset(root, labels=labels, progress=False)
        if not scan.records:
            raise DatasetError(f"{root}: no valid images found")
        rels = [r.path for r in scan.records]
        paths, y = scan.files(labels)
        listing = "".join(f"{r.path},{r.label},{r.sha256}\n" for r in scan.records)
        info.update(sha256=hashlib.sha256(listing.encode("utf-8")).hexdigest(),
                    sha256_of="listing 'path,label,file_sha256' of every valid image (scan_dataset order)",
                    skipped_bad_files=len(scan.bad), skipped_at_scan=[{"path": b.path, "reason": b.reason}
                                                                      for b in scan.bad])
        if scan.bad:
            notes.append(scan.skipped_note())
        notes.append(f"no --split-manifest: all {len(paths)} valid images under {root} are used")
        if scan.missing_classes:
            notes.append(f"{root} has no folder for class(es) {', '.join(scan.missing_classes)} of the models")
    y = np.asarray(y, dtype=np.int64)
    idx = balanced_indices(y, cfg.limit)
    info["limit"] = cfg.limit
    return BenchImages(paths=[os.fspath(paths[i]) for i in idx], rels=[rels[i] for i in idx], y=y[idx],
                       labels=labels, info=info)


def _model_split_manifest(model_paths) -> Path | None:
    """The split manifest the models were trained on, named by the export manifest.json beside them and checked
    by its sha256; None when there is none or it is not on this machine."""
    import json

    from ..core.atomic import sha256_file
    from ..export.manifest import MANIFEST_NAME

    for mp in model_paths:
        manifest = Path(mp).parent / MANIFEST_NAME
        try:
            rec = json.loads(manifest.read_text(encoding="utf-8")).get("split_manifest") or {}
        except (OSError, ValueError, AttributeError):
            continue
        rel, want = rec.get("path"), rec.get("file_sha256") or rec.get("sha256")
        if not rel:
            continue
        # As recorded (relative to where export ran, usually the repository root), then beside the manifest.
        for cand in (Path(rel), manifest.parent / rel, manifest.parent.parent / rel, manifest.parent / Path(rel).name):
            if cand.is_file() and (not want or sha256_file(cand) == want):
                return cand
    return None


def model_split_overlap(images: BenchImages, model_paths, notes: list[str]) -> dict | None:
    """How many of the benchmarked images the model saw in training (by file sha256 against the split
    manifest its export recorded): a bench on a sample is a parity and speed check, and its accuracy is not
    an estimate when most images were trained on - the table has to say so itself, not only the README."""
    from ..core.atomic import sha256_file
    from ..data import SplitManifest

    path = _model_split_manifest(model_paths)
    if path is None:
        return None
    split_of = {r.sha256: r.split for r in SplitManifest.load(path).rows}
    counts = {"train": 0, "val": 0, "test": 0, "not_in_split": 0}
    for p in images.paths:
        counts[split_of.get(sha256_file(p), "not_in_split")] += 1
    rec = {"split_manifest": str(path), **counts}
    images.info["model_split_overlap"] = rec
    seen = counts["train"] + counts["val"]
    if seen or counts["test"]:
        notes.append(f"{counts['train']} of these {len(images.paths)} images are in the model's training split, "
                     f"{counts['val']} in its val and {counts['test']} in its test split ({path}): accuracy here "
                     "is not an estimate of accuracy on new images" if seen else
                     f"all {counts['test']} images matched are in the model's test split ({path})")
    return rec
