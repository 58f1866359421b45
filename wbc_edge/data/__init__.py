"""Datasets as data: scanning an ImageFolder, duplicate grouping, the split manifest, the split, sampling.

The stage every other stage reads from (numpy + Pillow only, no TensorFlow):

- `scan`      list + decode every image once -> `ScanResult` (records, bad files, the class `labels`)
- `dedup`     flip/rotation-invariant dHash, duplicate groups, label conflicts
- `manifest`  `SplitManifest` CSV I/O (canonical bytes, `sha256()`, `manifest_sha256(path)`), verify
- `split`     `make_split` (stratified, group-aware, machine-independent) and `split_dataset` (all in one)
- `sampling`  the one stratified sampler (proportional, per-class cap, balanced)
- `sources`   several labelled labs as one training set (each split on its own, joined under one root)
"""

from .dedup import (
    DIHEDRAL,
    HASH_BITS,
    HASH_BYTES,
    HASH_SIZE,
    NEAR_DUP_THRESHOLD,
    DuplicateGroups,
    dihedral_dhash,
    group_duplicates,
    hash_distance,
    label_conflicts,
)
from .manifest import (
    MANIFEST_HEADER,
    SPLITS,
    ManifestRow,
    SplitManifest,
    manifest_sha256,
    require_all_classes,
    straddling_groups,
)
from .sampling import balanced_indices, class_ranks, per_class_indices, stratified_indices
from .scan import BadFile, ImageRecord, ScanResult, scan_dataset
from .sources import Source, link_sources, parse_sources, source_of, split_sources
from .split import SplitReport, group_order_key, make_split, split_dataset

__all__ = [
    "DIHEDRAL", "HASH_BITS", "HASH_BYTES", "HASH_SIZE", "MANIFEST_HEADER", "NEAR_DUP_THRESHOLD", "SPLITS",
    "BadFile", "DuplicateGroups", "ImageRecord", "ManifestRow", "ScanResult", "Source", "SplitManifest", "SplitReport",
    "balanced_indices", "class_ranks", "dihedral_dhash", "group_duplicates", "group_order_key",
    "hash_distance", "label_conflicts", "make_split", "manifest_sha256", "per_class_indices",
    "link_sources", "parse_sources", "require_all_classes", "scan_dataset", "source_of", "split_dataset",
    "split_sources", "straddling_groups", "stratified_indices",
]
