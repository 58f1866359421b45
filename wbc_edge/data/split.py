"""The leak-free, reproducible train/val/test split, and the one call that scans, groups, splits and saves.

Why: a group of duplicate images (`wbc_edge.data.dedup`) never straddles splits, so test accuracy measures
generalisation; and nothing depends on Python's `hash()`, a platform RNG, directory listing order or the
number of worker threads - groups are taken in sha256(f"{seed}:{group_id}") order - so a seed gives the
same split, byte for byte, on every machine.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import Sequence

from ..core.errors import DatasetError
from ..core.labels import Labels
from ..core.progress import Progress
from .dedup import NEAR_DUP_THRESHOLD, DuplicateGroups, group_duplicates, label_conflicts
from .manifest import ManifestRow, SplitManifest
from .scan import ImageRecord, ScanResult, scan_dataset


def group_order_key(seed: int, group_id: str) -> str:
    """The machine-independent order in which a seed takes duplicate groups (split, adapt's hold-out)."""
    return hashlib.sha256(f"{seed}:{group_id}".encode("utf-8")).hexdigest()


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))  # half-up: no banker's rounding surprises in the counts


def _check_fractions(test_fraction: float, val_fraction: float) -> None:
    for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not (0.0 <= frac < 1.0) or math.isnan(frac):
            raise DatasetError(f"{name} must be in [0, 1), got {frac}")
    if test_fraction + val_fraction >= 1.0:
        raise DatasetError(f"test_fraction + val_fraction must be < 1 (train would be empty), got "
                           f"{test_fraction} + {val_fraction}")


def _refuse_label_conflicts(records: Sequence[ImageRecord], groups: DuplicateGroups) -> None:
    conflicts = label_conflicts(records, groups)
    if conflicts:
        gid, items = conflicts[0]
        labels = sorted({label for _, label in items})
        listed = ", ".join(f"{p} ({label})" for p, label in items[:4])
        more = f" and {len(items) - 4} more" if len(items) > 4 else ""
        raise DatasetError(f"label conflict: the same image (group {gid}) is filed under "
                           f"{' and '.join(labels)}: {listed}{more}; delete the wrong copy")


def make_split(records: Sequence[ImageRecord], *, seed: int = 42, test_fraction: float = 0.2,
               val_fraction: float = 0.1, groups: DuplicateGroups | None = None,
               threshold: int = NEAR_DUP_THRESHOLD) -> SplitManifest:
    """Stratified, group-aware, machine-independent train/val/test split.

    Fractions are of the whole dataset (paper default: 80/20 train/test; val is carved out of the 80).
    Per class, groups are taken in sha256(f"{seed}:{group_id}") order and fill test, then val, up to
    round(fraction * class size); the rest is train.  A group never straddles splits.  A group whose
    files carry different labels is a DatasetError (a label conflict cannot be split away).
    """
    if not records:
        raise DatasetError("no images to split")
    _check_fractions(test_fraction, val_fraction)
    seen_paths: set[str] = set()
    for r in records:
        if r.path in seen_paths:
            raise DatasetError(f"duplicate path in records: {r.path}")
        seen_paths.add(r.path)
    if groups is None:
        groups = group_duplicates(records, threshold=threshold)
    by_path = {r.path: r for r in records}
    _refuse_label_conflicts(records, groups)
    class_groups: dict[str, list[tuple[str, int]]] = {}
    for gid, paths in groups.members.items():
        paths = [p for p in paths if p in by_path]
        if paths:
            class_groups.setdefault(by_path[paths[0]].label, []).append((gid, len(paths)))
    missing = [p for p in by_path if p not in groups.group_of]
    if missing:
        raise DatasetError(f"record {missing[0]} is not in the duplicate groups given (stale groups?)")

    need = 1 + (test_fraction > 0) + (val_fraction > 0)
    used = "/".join(s for s, f in (("train", 1.0), ("val", val_fraction), ("test", test_fraction)) if f)
    split_of_group: dict[str, str] = {}
    for label in sorted(class_groups):
        glist = class_groups[label]
        if len(glist) < need:
            raise DatasetError(f"class '{label}' has only {len(glist)} distinct image group(s) "
                               f"({sum(s for _, s in glist)} files); need at least {need} so that each of "
                               f"{used} gets one")
        n = sum(size for _, size in glist)
        t_target = max(1, _round(test_fraction * n)) if test_fraction > 0 else 0
        v_target = max(1, _round(val_fraction * n)) if val_fraction > 0 else 0
        t_cnt = v_cnt = tr_cnt = 0
        for gid, size in sorted(glist, key=lambda g: group_order_key(seed, g[0])):
            if t_cnt < t_target and (t_cnt + size <= t_target or t_cnt == 0):
                split_of_group[gid] = "test"
                t_cnt += size
            elif v_cnt < v_target and (v_cnt + size <= v_target or v_cnt == 0):
                split_of_group[gid] = "val"
                v_cnt += size
            else:
                split_of_group[gid] = "train"
                tr_cnt += size
        if tr_cnt == 0 or (t_target and not t_cnt) or (v_target and not v_cnt):
            raise DatasetError(f"class '{label}': cannot give every split an image ({len(glist)} groups, "
                               f"sizes {sorted((s for _, s in glist), reverse=True)[:5]}...); add images or "
                               f"lower the fractions")

    rows = []
    for r in records:
        gid = groups.group_of[r.path]
        rows.append(ManifestRow(r.path, r.label, r.sha256, gid, split_of_group[gid]))
    return SplitManifest(rows)


@dataclass
class SplitReport:
    """What `split_dataset` did, for printing and for run.json."""

    out: str
    sha256: str
    seed: int
    test_fraction: float
    val_fraction: float
    num_files: int
    num_groups: int
    #: groups that merged more than one file (exact or near duplicates), and the files in them
    merged_groups: int
    files_in_merged_groups: int
    exact_duplicate_sets: int
    near_duplicate_pairs: int
    threshold: int
    #: {split: {class: count}} over the scan's labels
    summary: dict[str, dict[str, int]]
    scan_seconds: float
    group_seconds: float


def split_dataset(root: str | os.PathLike, out_csv: str | os.PathLike, seed: int = 42, *,
                  labels: Labels | None = None, test_fraction: float = 0.2, val_fraction: float = 0.1,
                  strict: bool = False, progress: Progress | bool | None = True,
                  threshold: int = NEAR_DUP_THRESHOLD,
                  overwrite: bool = True) -> tuple[ScanResult, SplitManifest, SplitReport]:
    """Scan `root` (classes from its folders, or `labels`), group duplicates, split, save `out_csv` atomically."""
    if not overwrite and os.path.exists(out_csv):
        raise DatasetError(f"{out_csv}: already exists (use --force to overwrite)")
    scan = scan_dataset(root, labels=labels, strict=strict, progress=progress)
    groups = scan.duplicates(threshold)
    manifest = make_split(scan.records, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction,
                          groups=groups)
    manifest.root = scan.root
    sha = manifest.save(out_csv)
    merged = groups.merged
    report = SplitReport(out=str(out_csv), sha256=sha, seed=seed, test_fraction=test_fraction,
                         val_fraction=val_fraction, num_files=len(scan.records),
                         num_groups=len(groups.members), merged_groups=len(merged),
                         files_in_merged_groups=sum(len(m) for m in merged.values()),
                         exact_duplicate_sets=len(groups.exact_sets),
                         near_duplicate_pairs=len(groups.near_pairs), threshold=threshold,
                         summary=manifest.summary(scan.labels), scan_seconds=scan.seconds,
                         group_seconds=groups.seconds)
    return scan, manifest, report


__all__ = ["SplitReport", "group_order_key", "make_split", "split_dataset"]
