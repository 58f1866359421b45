"""Which files `wbc-edge predict` classifies: the files given, folders expanded to their images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

__all__ = ["IMAGE_SUFFIXES", "find_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to their image files (recursive, sorted, hidden entries skipped)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = [f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                     and not any(part.startswith(".") for part in f.relative_to(p).parts)]
            out.extend(sorted(found, key=lambda f: f.relative_to(p).as_posix()))
        else:
            out.append(p)
    return out
