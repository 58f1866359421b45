"""Replay: the source-domain images mixed into every adapt batch, so the source domain is not forgotten.

Why: a few local images pull the network towards the new lab; half of each batch from the images the model was
trained on (its run's train split, a stratified sample) keeps it working there too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.errors import DatasetError
from ..core.labels import Labels
from ..core.progress import Progress, resolve
from .config import AdaptConfig


def default_replay(cfg: AdaptConfig, run_dir: Path | None, run_info: dict | None) -> tuple[str | None, str | None]:
    """(replay data root, replay split manifest) from the config, else from the source run, else (None, None)."""
    if not cfg.replay or cfg.replay_images == 0:
        return None, None
    root, manifest = cfg.replay_data, cfg.replay_split_manifest
    if root is None and run_info:
        root = (run_info.get("config") or {}).get("data_root")
        if root is not None and manifest is None and run_dir is not None and (run_dir / "split.csv").is_file():
            manifest = str(run_dir / "split.csv")
    if root is not None and not Path(root).is_dir():
        raise DatasetError(f"{root}: replay data folder not found; pass --replay-data ROOT or --no-replay")
    return root, manifest


def replay_pool(root: str, manifest_path: str | None, n: int, seed: int, labels: Labels,
                progress: Progress | bool | None = None, split: str = "train") -> tuple[list[str], np.ndarray, str]:
    """Stratified sample of n source images: (paths, label indices in `labels` order, where they came from).

    From the manifest's `split` when one is given (train: the replay; val: the images `interpolate` checks
    the source accuracy on), else from every valid image of root; a class the source labels do not know is a
    one-line DatasetError (never a silently shifted index)."""
    from ..data import SplitManifest, scan_dataset, stratified_indices

    if manifest_path:
        paths, y = SplitManifest.load(manifest_path, labels=labels).files(split, root, labels=labels)
        if not paths:
            raise DatasetError(f"{manifest_path}: split {split!r} is empty (source images for adapting)")
        where = f"{manifest_path} ({split} split)"
    else:
        paths, y = scan_dataset(root, labels=labels, progress=resolve(progress)).files(labels)
        where = f"{root} (all images)"
    idx = stratified_indices(y, n, seed)
    paths = [paths[i] for i in idx]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: replay image not found ({len(missing)} of {len(paths)} missing); "
                           "check --replay-data / --replay-split-manifest, or pass --no-replay")
    return paths, y[idx], where
