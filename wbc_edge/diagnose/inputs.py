"""What a diagnosis reads: the model and its run, the evaluated domains' pixels, the calibration arms.

The model, split manifest, data root and labels are resolved exactly as export resolves them
(`wbc_edge.export.inputs`), and the calibration images are drawn with export's own function
(`wbc_edge.export.calibration_data.sample_pixels`, pinned by `calibration_batch`), so the int8 model
diagnosed here is the one `wbc-edge export` writes.  Pixels always come from `wbc_edge.core.preprocess`;
with a cache folder they are kept as .npz keyed by the files (path, size, mtime), the size and the
preprocess version, so repeated diagnoses skip the decoding.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_path
from ..data import SplitManifest, scan_dataset, stratified_indices
from ..core.errors import DatasetError
from ..export.config import ExportConfig
from ..export.inputs import domain_name, domain_root
from ..core.labels import Labels
from ..core.preprocess import PREPROCESS_VERSION, preprocess
from ..core.progress import Progress
from .config import DiagnoseConfig


@dataclass
class Domain:
    """One evaluated set of images (clean pixels, never augmented)."""

    name: str
    root: Path
    selection: str                 # "split 'test' of split.csv" or "all N valid images"
    home: bool                     # the run's own data (its split), not a foreign lab's
    paths: list[str]
    labels: np.ndarray
    pixels: np.ndarray             # uint8 (N, S, S, 3)


def export_config(cfg: DiagnoseConfig) -> ExportConfig:
    """The export settings the diagnosis mirrors (inputs and calibration)."""
    return ExportConfig(source=cfg.source, data_root=cfg.data_root, split_manifest=cfg.split_manifest,
                        labels=cfg.labels, calibration_size=cfg.calibration_size,
                        calibration_split=cfg.calibration_split, calibration_augment=cfg.calibration_augment,
                        calibration_augmented_fraction=cfg.calibration_augmented_fraction, seed=cfg.seed)


def cached_pixels(cache_dir: str | os.PathLike | None, key: Sequence,
                  compute: Callable[[], np.ndarray]) -> np.ndarray:
    """`compute()` once per key: a uint8 array stored as <cache>/pixels_<sha>.npz (atomically)."""
    if cache_dir is None:
        return compute()
    digest = hashlib.sha256(json.dumps(list(key), default=str).encode()).hexdigest()[:24]
    path = Path(cache_dir).expanduser() / f"pixels_{digest}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["pixels"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is recomputed and replaced
    pixels = compute()
    with atomic_path(path) as tmp:
        np.savez(tmp, pixels=pixels)
    return pixels


def files_key(paths: Sequence[str], size: int) -> list:
    """What identifies the pixels of these files: names, sizes, mtimes, input size, preprocess version."""
    stats = []
    for p in paths:
        st = os.stat(p)
        stats.append((str(p), st.st_size, st.st_mtime_ns))
    return [PREPROCESS_VERSION, int(size), stats]


def load_pixels(paths: Sequence[str], size: int, progress: Progress, label: str,
                cache_dir: str | os.PathLike | None) -> np.ndarray:
    """Preprocessed uint8 pixels of `paths` (through the cache when there is one)."""
    def compute() -> np.ndarray:
        out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
        with progress.task(len(paths), label) as advance:
            for i, p in enumerate(paths):
                out[i] = preprocess(p, size)
                advance(1)
        return out

    return cached_pixels(cache_dir, ["files", *files_key(paths, size)], compute)


def load_domains(cfg: DiagnoseConfig, data_root: Path, split: SplitManifest, split_path: Path, labels: Labels,
                 size: int, progress: Progress) -> list[Domain]:
    """Each --data domain: the manifest's `cfg.split` split when ROOT is the run's data root, else every
    valid image under ROOT; a stratified `cfg.limit` subset when asked."""
    out = []
    home_root = data_root.resolve()
    for spec in cfg.data:
        name, root = domain_name(spec), Path(domain_root(spec)).expanduser()
        if root.resolve() == home_root:
            paths, y = split.files(cfg.split, data_root, labels=labels)
            if not paths:
                raise DatasetError(f"{split_path}: split '{cfg.split}' is empty (domain {name})")
            selection, home = f"split '{cfg.split}' of {split_path}", True
        else:
            scan = scan_dataset(root, labels=labels, progress=False)
            paths, y = scan.files(labels)
            if not paths:
                raise DatasetError(f"{root}: no valid images (domain {name})")
            selection, home = f"all {len(paths)} valid images", False
        idx = stratified_indices(y, cfg.limit, cfg.seed)
        paths, y = [paths[i] for i in idx], np.asarray(y)[idx]
        if cfg.limit is not None:
            selection += f", stratified subset of {len(paths)} (seed {cfg.seed})"
        pixels = load_pixels(paths, size, progress, f"Preprocessing {name}", cfg.cache_dir)
        out.append(Domain(name, root, selection, home, [str(p) for p in paths], y, pixels))
    return out


@dataclass
class Calibration:
    """One calibration arm's images (uint8) and how they were drawn."""

    arm: str
    pixels: np.ndarray
    description: str
    diagnostic_only: bool = False
    held_out: dict[str, np.ndarray] | None = None  # domain -> indices used for calibration (foreign arm)


def calibration_arms(cfg: DiagnoseConfig, split: SplitManifest, data_root: Path, labels: Labels, size: int,
                     domains: Sequence[Domain], progress: Progress) -> dict[str, Calibration]:
    """The arms asked for, each drawn as export draws its calibration sample (same images, same seed)."""
    from ..export.calibration_data import sample_pixels

    cpaths, clabels = split.files(cfg.calibration_split, data_root, labels=labels)
    if not cpaths:
        raise DatasetError(f"split '{cfg.calibration_split}' of the split manifest is empty (calibration)")
    sample = stratified_indices(clabels, cfg.calibration_size, cfg.seed)
    base_key = files_key([cpaths[i] for i in sample], size)

    def draw(preset: str | None) -> np.ndarray:
        def compute() -> np.ndarray:
            progress.say(f"Calibration images: {cfg.calibration_size} from '{cfg.calibration_split}'"
                         + (f", {cfg.calibration_augmented_fraction:.0%} augmented ({preset})" if preset else
                            ", clean"))
            return sample_pixels(cpaths, clabels, cfg.calibration_size, size, cfg.seed, augment_preset=preset,
                                 augmented_fraction=cfg.calibration_augmented_fraction)[0]

        return cached_pixels(cfg.cache_dir, ["calibration", base_key, cfg.seed, preset,
                                             cfg.calibration_augmented_fraction if preset else 0], compute)

    n = cfg.calibration_size
    arms: dict[str, Calibration] = {}
    if "clean" in cfg.arms or not cfg.calibration_augment:
        arms["clean"] = Calibration("clean", draw(None), f"{n} clean '{cfg.calibration_split}' images")
    if cfg.calibration_augment:  # export's own calibration: always drawn, it is the diagnosed model's
        arms["augmented"] = Calibration(
            "augmented", draw(cfg.calibration_augment),
            f"{n} '{cfg.calibration_split}' images, {cfg.calibration_augmented_fraction:.0%} augmented "
            f"('{cfg.calibration_augment}' preset) - export's default")
    foreign = [d for d in domains if not d.home]
    if "foreign" in cfg.arms and foreign:
        base = arms["augmented"] if "augmented" in arms else arms["clean"]
        held, extra = {}, []
        for d in foreign:
            idx = stratified_indices(d.labels, cfg.foreign_images, cfg.seed)
            held[d.name] = idx
            extra.append(d.pixels[idx])
        arms["foreign"] = Calibration(
            "foreign", np.concatenate([base.pixels, *extra]),
            f"the {base.arm} arm + {cfg.foreign_images} images of each foreign domain "
            f"({', '.join(d.name for d in foreign)}) - DIAGNOSTIC ONLY: it calibrates on images of the "
            "domains it is judged on; never ship it", diagnostic_only=True, held_out=held)
    return arms


def default_arm(cfg: DiagnoseConfig) -> str:
    """The arm export uses: augmented when export augments its calibration, else clean."""
    return "augmented" if cfg.calibration_augment else "clean"
