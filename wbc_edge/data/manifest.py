"""The split manifest: one CSV row per image (path,label,sha256,group,split), canonical bytes, one hash.

Why: the split must be the same on every machine and every run, so that a model trained on a laptop and
evaluated on a GPU box is scored on the same test images.  The CSV is written byte-for-byte canonically
(header, rows sorted by path, UTF-8, '\\n' line ends), so its sha256 *names* the split; every later stage
records `SplitManifest.sha256()` / `manifest_sha256(path)` - the hash of the canonical bytes, which is the
same for a CRLF or hand-sorted copy of the same split, so no stage warns about a split that did not change.

The label set of a manifest is read from its rows (`label_set`, sorted canonical names = the order a
dataset's folders give); a model's labels can be passed instead to index rows in the model's order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from ..core.atomic import sha256_file, write_bytes
from ..core.errors import DatasetError
from ..core.labels import Labels, canonical_name

SPLITS = ("train", "val", "test")
MANIFEST_HEADER = ("path", "label", "sha256", "group", "split")

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class ManifestRow(NamedTuple):
    path: str
    label: str
    sha256: str
    group: str
    split: str


def straddling_groups(rows: Iterable[ManifestRow]) -> list[str]:
    """Group ids that appear in more than one split (a leak), sorted."""
    split_of: dict[str, str] = {}
    bad: list[str] = []
    for r in rows:
        s = split_of.setdefault(r.group, r.split)
        if s != r.split and r.group not in bad:
            bad.append(r.group)
    return sorted(bad)


@dataclass
class SplitManifest:
    """The split as data: one row per image, saved as a canonical CSV whose sha256 names the split.

    Canonical bytes (header `path,label,sha256,group,split`, rows sorted by path, UTF-8, '\\n' endings)
    make the sha256 equal on every OS, so later stages can record and check which split they used.
    """

    rows: list[ManifestRow]
    #: The data root the relative paths resolve against (default for `files`/`verify`); not saved.
    root: str | None = None
    #: Where the rows were read from (`load`), for error messages; not saved.
    source: str | None = field(default=None, compare=False)
    _line_of: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.rows = sorted((ManifestRow(*r) for r in self.rows), key=lambda r: r.path)

    # -- bytes / files
    def to_bytes(self) -> bytes:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
        w.writerow(MANIFEST_HEADER)
        for r in self.rows:
            w.writerow(r)
        return buf.getvalue().encode("utf-8")

    def sha256(self) -> str:
        """sha256 of the canonical bytes `save` writes (== sha256 of the saved file)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | os.PathLike) -> str:
        """Write the canonical bytes atomically; return their sha256."""
        data = self.to_bytes()
        write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike, root: str | os.PathLike | None = None, *,
             labels: Labels | None = None) -> "SplitManifest":
        """Read and validate a manifest; any problem is a one-line DatasetError with the line number.

        Labels are canonicalised ('Basophil' -> 'basophil', 'EOS' -> 'eosinophil'); with `labels` given
        (a model's classes) every row's label must be one of them."""
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise DatasetError(f"{path}: split manifest not found") from None
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{path}: split manifest is not UTF-8 text ({exc.reason})") from None
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read split manifest ({exc.strerror or exc})") from None
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
        header = next(reader, None)
        if header is None:
            raise DatasetError(f"{path}: split manifest is empty")
        if tuple(h.strip() for h in header) != MANIFEST_HEADER:
            raise DatasetError(f"{path}:1: bad header {','.join(header)!r}, expected "
                               f"{','.join(MANIFEST_HEADER)!r}")
        rows: list[ManifestRow] = []
        seen: dict[str, int] = {}
        for fields in reader:
            line = reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            if len(fields) != len(MANIFEST_HEADER):
                raise DatasetError(f"{path}:{line}: expected {len(MANIFEST_HEADER)} fields "
                                   f"({','.join(MANIFEST_HEADER)}), got {len(fields)}")
            p, label, sha, group, split = (f.strip() for f in fields)
            canon = _row_label(label, labels, f"{path}:{line}")
            if split not in SPLITS:
                raise DatasetError(f"{path}:{line}: unknown split {split!r} (known: {', '.join(SPLITS)})")
            if not p or p.startswith("/") or "\\" in p or ".." in p.split("/"):
                raise DatasetError(f"{path}:{line}: bad path {p!r} (must be relative to the data root, "
                                   f"with '/' separators)")
            if not _SHA256_RE.match(sha):
                raise DatasetError(f"{path}:{line}: bad sha256 {sha!r} (64 lowercase hex digits)")
            if not group:
                raise DatasetError(f"{path}:{line}: empty group id")
            if p in seen:
                raise DatasetError(f"{path}:{line}: duplicate path {p!r} (first on line {seen[p]})")
            seen[p] = line
            rows.append(ManifestRow(p, canon, sha, group, split))
        if not rows:
            raise DatasetError(f"{path}: split manifest has a header but no rows")
        straddle = straddling_groups(rows)
        if straddle:
            raise DatasetError(f"{path}: group {straddle[0]} appears in more than one split (leak)")
        out = cls(rows, root=None if root is None else str(root), source=str(path))
        out._line_of = seen
        return out

    # -- labels
    @property
    def label_set(self) -> Labels:
        """The classes of the rows: `Labels.from_names` of the distinct labels (sorted canonical names)."""
        try:
            return Labels.from_names(sorted({r.label for r in self.rows}))
        except DatasetError as exc:
            raise DatasetError(f"{self._where()}: {exc}") from None

    def _where(self, path: str | None = None) -> str:
        src = self.source or "split manifest"
        if path is not None and path in self._line_of:
            return f"{src}:{self._line_of[path]}"
        return src

    def _indices(self, rows: Sequence[ManifestRow], labels: Labels | None) -> np.ndarray:
        lab = self.label_set if labels is None else labels
        out = np.empty(len(rows), dtype=np.int64)
        for i, r in enumerate(rows):
            if r.label not in lab:
                raise DatasetError(f"{self._where(r.path)}: label {r.label!r} of {r.path} is not one of the "
                                   f"model's classes ({', '.join(lab)})")
            out[i] = lab.index(r.label)
        return out

    # -- queries
    def _rows(self, split: str) -> list[ManifestRow]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return [r for r in self.rows if r.split == split]

    def paths(self, split: str) -> list[str]:
        """Relative paths of one split, sorted."""
        return [r.path for r in self._rows(split)]

    def labels(self, split: str, labels: Labels | None = None) -> np.ndarray:
        """int64 class indices of one split, aligned with `paths(split)`, in `labels` order (default: the
        manifest's own `label_set`).  A row whose label is not in `labels`: DatasetError naming file + line."""
        return self._indices(self._rows(split), labels)

    def files(self, split: str, root: str | os.PathLike | None = None, *,
              labels: Labels | None = None) -> tuple[list[str], np.ndarray]:
        """(absolute file paths, int64 label indices) of one split; `root` defaults to `self.root`."""
        base = self._root(root)
        return [os.path.join(base, *p.split("/")) for p in self.paths(split)], self.labels(split, labels)

    def summary(self, labels: Labels | None = None) -> dict[str, dict[str, int]]:
        """{split: {class: count}} for train/val/test x the classes (`label_set` by default), zeros included."""
        lab = self.label_set if labels is None else labels
        self._indices(self.rows, lab)  # a row outside `labels`: the one-line error naming file and line
        out = {s: {c: 0 for c in lab} for s in SPLITS}
        for r in self.rows:
            out[r.split][r.label] += 1
        return out

    def verify(self, root: str | os.PathLike | None = None, *, check_sha256: bool = False) -> int:
        """Check every listed file exists under root (and, optionally, still has its sha256).

        Catches a manifest paired with the wrong or a changed data folder before hours of training.
        Returns the number of files checked; raises DatasetError naming the first problem.
        """
        base = self._root(root)
        missing: list[str] = []
        changed: list[str] = []
        for r in self.rows:
            full = os.path.join(base, *r.path.split("/"))
            if not os.path.isfile(full):
                missing.append(r.path)
                continue
            if check_sha256 and sha256_file(full) != r.sha256:
                changed.append(r.path)
        if missing:
            raise DatasetError(f"{base}: {len(missing)} of {len(self.rows)} files in the split manifest are "
                               f"missing, first: {missing[0]}")
        if changed:
            raise DatasetError(f"{base}: {len(changed)} of {len(self.rows)} files changed since the split "
                               f"(sha256 differs), first: {changed[0]}")
        return len(self.rows)

    def _root(self, root) -> str:
        base = root if root is not None else self.root
        if base is None:
            raise DatasetError("no data root given for the split manifest")
        return os.path.abspath(base)


def _row_label(label: str, labels: Labels | None, where: str) -> str:
    """The canonical class of a manifest row's label; DatasetError when it is unusable / not in `labels`."""
    if labels is not None:
        canon = labels.lookup(label)
        if canon is None:
            raise DatasetError(f"{where}: unknown label {label!r} (known: {', '.join(labels)})")
        return canon
    canon = canonical_name(label)
    if not canon:
        raise DatasetError(f"{where}: empty label")
    return canon  # the other name rules are checked when the label set is built (`label_set`)


def manifest_sha256(path: str | os.PathLike) -> str:
    """The sha256 that names the split in `path`: of its canonical bytes, whatever line ends or row order
    the file has.  Every stage records and compares this (never the raw file hash)."""
    return SplitManifest.load(path).sha256()


def require_all_classes(y, where: str, why: str = "to compute metrics", *, labels: Labels) -> None:
    """DatasetError naming the classes of `labels` that have no sample in `y` (indices into `labels`).

    Metrics over a split that lacks a class silently change meaning (balanced accuracy and macro-F1 average
    over fewer classes, the class's recall is undefined), so a manifest split must hold every class."""
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=len(labels))
    absent = [c for c, n in zip(labels, counts[:len(labels)], strict=True) if n == 0]
    if absent:
        raise DatasetError(f"{where} has no images of class(es) {', '.join(absent)} "
                           f"({len(y)} images); every class must be present {why} - "
                           "re-split the data (wbc-edge data split) or add images")


__all__ = ["MANIFEST_HEADER", "SPLITS", "ManifestRow", "SplitManifest", "manifest_sha256",
           "require_all_classes", "straddling_groups"]
