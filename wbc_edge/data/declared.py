"""The groups a dataset declares itself: a `group` column in the manifest.csv beside its class folders.

Why: shifted crops of one cell, or the cells of one slide, are not duplicates to any hash, yet must never be
split between train and test (LISC: 1,218 crops of 224 cells).  `ScanResult.duplicates` merges these groups
into the duplicate groups (`dedup.merge_declared_groups`), so every split keeps them together.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import DatasetError

#: A dataset's own file list beside its class folders; a `group` column there names images that belong together.
DECLARED_MANIFEST = "manifest.csv"


def read_declared_groups(root: str | os.PathLike) -> dict[str, str]:
    """{path: group} from ROOT/manifest.csv when it has `path` and `group` columns, else {}.  A malformed file
    is a one-line DatasetError naming it (a silently ignored group column would leak cells across splits)."""
    import csv

    path = Path(root) / DECLARED_MANIFEST
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "group" not in reader.fieldnames or "path" not in reader.fieldnames:
                return {}
            out = {}
            for i, row in enumerate(reader, start=2):
                if not row.get("path") or not row.get("group"):
                    raise DatasetError(f"{path}:{i}: empty path or group")
                out[row["path"].replace("\\", "/")] = row["group"]
            return out
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: cannot read its group column ({exc})") from None


__all__ = ["DECLARED_MANIFEST", "read_declared_groups"]
