"""Dataset scanning, duplicate grouping and the leak-free, reproducible train/val/test split.

Why this module exists:
- A blood-cell dataset copied around by hand collects junk (`.DS_Store`, truncated downloads, a PNG saved
  as .jpg) and the same cell twice (re-saved, flipped, rotated).  If two copies of one cell land in train
  and test, test accuracy measures memory, not generalisation.  So every file is decoded once, bad files
  are reported (and skipped), and byte-identical *and* visually near-identical images are grouped; a
  group never straddles splits.
- The split must be the same on every machine and every run for a given seed, so that a model trained on
  a laptop and evaluated on a GPU box is evaluated on the same test images.  Nothing here depends on
  Python's `hash()`, a platform RNG, directory listing order or the number of worker threads: groups are
  ordered by sha256(f"{seed}:{group_id}") and the manifest CSV is byte-for-byte canonical, so its
  sha256 identifies the split.

Numpy + Pillow only (no TensorFlow): the runtime machines and the CLI's `data` commands use it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
from PIL import Image

from .atomic import sha256_file, write_bytes
from .classes import CLASS_INDEX, CLASSES, canonical_class
from .errors import BadImageError, DatasetError, first_line
from .preprocess import load_image

# ---------------------------------------------------------------------------------------------------------
# Constants (measured on PBC, see `group_duplicates`)

#: Thumbnail side minus one: the grey thumbnail is (HASH_SIZE+1) x (HASH_SIZE+1) and every row gives
#: HASH_SIZE left/right comparisons, so one transform's hash has (HASH_SIZE+1)*HASH_SIZE = 272 bits.
#: A square thumbnail (not the usual (n+1) x n) keeps all 8 flips/rotations the same shape.
HASH_SIZE = 16
HASH_BITS = (HASH_SIZE + 1) * HASH_SIZE
HASH_BYTES = (HASH_BITS + 7) // 8
#: The 8 symmetries of the square, in the order their hashes are stored in `ImageRecord.dhash`.
DIHEDRAL = ("identity", "flip", "rot90", "rot90+flip", "rot180", "rot180+flip", "rot270", "rot270+flip")
#: Max Hamming distance (of 272 bits, minimum over the 8 transforms) at which two images are one group.
#: Measured on PBC (10,284 images): the two closest distinct-byte pairs are the same cell re-saved
#: (distance 23 and 26, identical red-cell surroundings), the closest *different* cells are at 52; a flipped,
#: 90-degree-rotated, JPEG q75 re-encoded or 3-10% resized copy of 200 PBC cells stayed <= 11, JPEG q50 +
#: rotation <= 24.  36 sits in the empty gap between 26 and 52.
NEAR_DUP_THRESHOLD = 36

SPLITS = ("train", "val", "test")
MANIFEST_HEADER = ("path", "label", "sha256", "group", "split")

#: Files that operating systems drop into folders; never images, always reported.
SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "ehthumbs.db", "icon\r"})
#: Loose files in the dataset root with these suffixes/names are documentation that travels with a dataset
#: (the PBC copy ships README.md, manifest.csv, excluded_files.csv): listed as ignored, not as bad files,
#: so `--strict` accepts a documented dataset.  A loose *image* in the root is still a bad file.
ROOT_DOC_SUFFIXES = frozenset({".md", ".txt", ".rst", ".csv", ".tsv", ".json", ".yaml", ".yml", ".pdf",
                               ".html", ".htm", ".cff", ".bib", ".ipynb", ".py", ".sh", ".xlsx", ".xls"})
ROOT_DOC_NAMES = frozenset({"readme", "license", "licence", "copying", "notice", "citation", "authors"})
#: Below this many files a thread pool costs more than it saves.
_PARALLEL_MIN_FILES = 64

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


# ---------------------------------------------------------------------------------------------------------
# Records


@dataclass
class ImageRecord:
    """One decodable image.  `width`/`height` are after EXIF orientation (what the model sees); `mode`
    is the file's own PIL mode before conversion to RGB (tells you a 16-bit or palette file was found)."""

    path: str  # relative to the scan root, POSIX '/', folder name as on disk
    label: str  # canonical class name
    sha256: str  # of the file bytes
    width: int
    height: int
    mode: str
    #: 8 x HASH_BYTES bytes: the difference hash of each transform in DIHEDRAL order (identity first).
    dhash: bytes = field(repr=False, default=b"")

    @property
    def label_index(self) -> int:
        return CLASS_INDEX[self.label]


@dataclass
class BadFile:
    """A file that was skipped, and why (one line)."""

    path: str  # relative to the scan root, POSIX '/'
    reason: str


@dataclass
class ScanResult:
    """Everything one pass over a dataset folder found.  `records` are sorted by path."""

    root: str  # absolute
    records: list[ImageRecord]
    bad: list[BadFile]
    #: Not-an-image files that are expected next to a dataset (README.md in the root, hidden folders).
    ignored: list[BadFile]
    #: canonical class -> folder name on disk (e.g. 'basophil' -> 'Basophil')
    class_dirs: dict[str, str]
    seconds: float = 0.0
    _groups: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def class_counts(self) -> dict[str, int]:
        """Images per class in CLASSES order; a class without a folder counts 0."""
        counts = Counter(r.label for r in self.records)
        return {c: counts.get(c, 0) for c in CLASSES}

    @property
    def missing_classes(self) -> list[str]:
        return [c for c in CLASSES if c not in self.class_dirs]

    def size_histogram(self, top: int | None = None) -> list[tuple[tuple[int, int], int]]:
        """[((width, height), count), ...], most common first (ties by size, so the order is stable)."""
        counts = Counter((r.width, r.height) for r in self.records)
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return items if top is None else items[:top]

    def mode_counts(self) -> dict[str, int]:
        counts = Counter(r.mode for r in self.records)
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def duplicates(self, threshold: int = NEAR_DUP_THRESHOLD) -> "DuplicateGroups":
        """`group_duplicates(self.records, threshold)`, computed once per threshold."""
        if threshold not in self._groups:
            self._groups[threshold] = group_duplicates(self.records, threshold=threshold)
        return self._groups[threshold]


# ---------------------------------------------------------------------------------------------------------
# Perceptual hash


def dihedral_dhash(im: Image.Image) -> bytes:
    """Difference hash of all 8 flips/rotations of `im` -> 8 * HASH_BYTES bytes (DIHEDRAL order).

    Why dHash on a 17x17 grey thumbnail: the thumbnail averages ~20x20 source pixels per cell, so JPEG
    re-encoding noise and small resizes barely move it, while the cell's outline and the surrounding red
    cells (which differ between any two PBC captures) decide the bits.  The transforms are applied to the
    thumbnail, not the image, so a flipped or rotated copy produces (almost exactly) one of these 8 hashes.
    """
    grey = im.convert("L").resize((HASH_SIZE + 1, HASH_SIZE + 1), Image.Resampling.BILINEAR)
    a = np.asarray(grey, dtype=np.int16)
    out = bytearray()
    for k in range(4):
        r = np.rot90(a, k)
        for t in (r, r[:, ::-1]):
            out += np.packbits(t[:, 1:] > t[:, :-1]).tobytes()
    return bytes(out)


def hash_distance(a: bytes, b: bytes) -> int:
    """Near-duplicate distance of two `ImageRecord.dhash` values: the minimum Hamming distance between
    a's identity hash and any of b's 8 transform hashes."""
    ha = np.unpackbits(np.frombuffer(a[:HASH_BYTES], dtype=np.uint8))[:HASH_BITS]
    hb = np.unpackbits(np.frombuffer(b, dtype=np.uint8).reshape(8, HASH_BYTES), axis=1)[:, :HASH_BITS]
    return int((hb != ha).sum(axis=1).min())


# ---------------------------------------------------------------------------------------------------------
# Scanning


def _examine(path: str) -> tuple:
    """Decode one file once; return ('ok', sha256, w, h, mode, dhash) or ('bad', reason).

    Returns a tuple instead of raising so that one strange file never aborts a 10k-file scan, and so the
    worker result is trivially picklable should the pool ever become a process pool."""
    try:
        im = load_image(path)
        with open(path, "rb") as fh:
            data = fh.read()
        try:
            # Header parse only (no decode): the original mode, which load_image's RGB output hides.
            with Image.open(io.BytesIO(data)) as probe:
                mode = probe.mode
        except Exception:  # noqa: BLE001 - load_image already accepted the file; mode is informational
            mode = im.mode
        return ("ok", hashlib.sha256(data).hexdigest(), im.width, im.height, mode, dihedral_dhash(im))
    except BadImageError as exc:
        return ("bad", exc.reason)
    except OSError as exc:
        return ("bad", f"cannot read ({exc.strerror or exc})")
    except Exception as exc:  # noqa: BLE001 - a decoder bug on one file must not kill the scan
        first = first_line(str(exc))
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        return ("bad", f"unexpected error while decoding ({detail})")


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _unportable_name(rel: str) -> str | None:
    """Why a relative path cannot go into the split manifest CSV unchanged (None when it can)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8; rename the file"
    if "\\" in rel:
        return "file name contains a backslash (not portable); rename the file"
    if rel != rel.strip():
        return "file name starts or ends with a space; rename the file"
    return None


def _printable(rel: str) -> str:
    """A path with undecodable bytes shown as escapes, so that reports and JSON can be written."""
    return rel.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_system_file(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def _is_root_doc(name: str) -> bool:
    p = Path(name)
    return p.suffix.lower() in ROOT_DOC_SUFFIXES or p.stem.lower() in ROOT_DOC_NAMES


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(8, n))


def _list_dataset(root: str) -> tuple[list[tuple[str, str]], list[BadFile], list[BadFile], dict[str, str]]:
    """Walk root/<class>/**: (absolute file path, label) candidates, bad files, ignored entries, class dirs.

    Raises DatasetError for layout problems that make the dataset ambiguous (unknown or doubled class
    folder, nothing at all) - those are not per-file problems one could skip."""
    bad: list[BadFile] = []
    ignored: list[BadFile] = []
    class_dirs: dict[str, str] = {}
    unknown: list[str] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"{root}: cannot list dataset folder ({exc.strerror or exc})") from None
    if not entries:
        raise DatasetError(f"{root}: dataset folder is empty (expected one folder per class: "
                           f"{', '.join(CLASSES)})")
    for e in entries:
        try:
            is_dir = e.is_dir()  # follows a symlinked class folder on purpose
        except OSError:
            is_dir = False
        if is_dir:
            if e.name.startswith("."):
                ignored.append(BadFile(e.name + "/", "hidden folder, skipped"))
                continue
            label = canonical_class(e.name)
            if label is None:
                unknown.append(e.name)
            elif label in class_dirs:
                raise DatasetError(f"{root}: folders '{class_dirs[label]}' and '{e.name}' both mean class "
                                   f"'{label}' (class folders are matched case-insensitively); merge them")
            else:
                class_dirs[label] = e.name
        elif _is_system_file(e.name):
            bad.append(BadFile(e.name, "system file, not an image"))
        elif _is_root_doc(e.name):
            ignored.append(BadFile(e.name, "documentation file in the dataset root, not an image"))
        else:
            bad.append(BadFile(e.name, "not inside a class folder"))
    if unknown:
        more = f" (and {len(unknown) - 1} more: {', '.join(unknown[1:4])})" if len(unknown) > 1 else ""
        raise DatasetError(f"{root}: unknown class folder '{unknown[0]}'{more}; accepted folder names "
                           f"(case-insensitive): {', '.join(CLASSES)}")
    if not class_dirs:
        raise DatasetError(f"{root}: no class folders found (expected one folder per class: "
                           f"{', '.join(CLASSES)})")

    files: list[tuple[str, str]] = []
    for label in sorted(class_dirs, key=lambda c: class_dirs[c]):
        top = os.path.join(root, class_dirs[label])
        walk_errors: list[OSError] = []
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False, onerror=walk_errors.append):
            keep = []
            for d in sorted(dirnames):
                full = os.path.join(dirpath, d)
                if os.path.islink(full):
                    # Not followed: a link back up the tree would loop forever, and a link elsewhere would
                    # quietly pull in images from outside the dataset.
                    bad.append(BadFile(_rel(full, root) + "/", "symlink to a folder, not followed"))
                elif d.startswith("."):
                    ignored.append(BadFile(_rel(full, root) + "/", "hidden folder, skipped"))
                else:
                    keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                name_problem = _unportable_name(_rel(full, root))
                if _is_system_file(name):
                    bad.append(BadFile(_rel(full, root), "system file, not an image"))
                elif name_problem:
                    bad.append(BadFile(_printable(_rel(full, root)), name_problem))
                else:
                    files.append((full, label))
        for err in walk_errors:
            where = _rel(err.filename, root) if getattr(err, "filename", None) else class_dirs[label]
            bad.append(BadFile(where, f"cannot list folder ({err.strerror or err})"))
    return files, bad, ignored, class_dirs


def scan_dataset(root: str | os.PathLike, *, strict: bool = False, progress: bool = True,
                 workers: int | None = None) -> ScanResult:
    """Decode every image under an ImageFolder tree root/<class>/**/<image> once and describe it.

    Bad files are reported and skipped (`strict=True`: DatasetError naming the first one), because one
    truncated download should not stop training on 10,000 good images - but the user must see it.
    Results are independent of `workers` and listing order (records are sorted by path).
    """
    t0 = time.perf_counter()
    root_path = Path(root)
    if not root_path.is_dir():
        raise DatasetError(f"{root}: dataset folder not found (or not a folder)")
    root_abs = os.path.abspath(root_path)
    files, bad, ignored, class_dirs = _list_dataset(root_abs)

    paths = [f for f, _ in files]
    n_workers = _default_workers() if workers is None else max(1, int(workers))
    pool = ThreadPoolExecutor(n_workers) if n_workers > 1 and len(paths) >= _PARALLEL_MIN_FILES else None
    try:
        # Threads, not processes: Pillow's JPEG decoder, resize and hashlib release the GIL, so threads
        # scale as well as processes here (measured: 6.4 s vs 6.8 s for PBC on 2 cores) without pickling,
        # spawn start-up or fork-after-TensorFlow hazards.  map() keeps input order -> deterministic.
        results: Iterable = pool.map(_examine, paths, chunksize=1) if pool else map(_examine, paths)
        out: list[tuple] = []
        if progress and paths:
            with _progressbar(len(paths), f"Scanning {len(paths)} files") as bar:
                for res in results:
                    out.append(res)
                    bar.update(1)
        else:
            out = list(results)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    records: list[ImageRecord] = []
    for k, (full, label) in enumerate(files):
        res = out[k]
        rel = _rel(full, root_abs)
        if res[0] == "ok":
            _, sha, w, h, mode, dh = res
            records.append(ImageRecord(rel, label, sha, w, h, mode, dh))
        else:
            bad.append(BadFile(rel, res[1]))
    records.sort(key=lambda r: r.path)
    bad.sort(key=lambda b: b.path)
    ignored.sort(key=lambda b: b.path)

    if strict and bad:
        first = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DatasetError(f"{root}: strict mode: bad file {first.path}: {first.reason}{more}")
    present = Counter(r.label for r in records)
    for label, folder in sorted(class_dirs.items(), key=lambda kv: kv[1]):
        if not present.get(label):
            raise DatasetError(f"class '{label}' ({os.path.join(str(root), folder)}) has no valid images")
    return ScanResult(root=root_abs, records=records, bad=bad, ignored=ignored, class_dirs=class_dirs,
                      seconds=time.perf_counter() - t0)


class _progressbar:
    """click.progressbar on stderr, imported lazily (click is a CLI dependency, not a library one)."""

    def __init__(self, length: int, label: str):
        import click

        self._bar = click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True,
                                      show_eta=True, width=30)

    def __enter__(self):
        return self._bar.__enter__()

    def __exit__(self, *exc):
        return self._bar.__exit__(*exc)


# ---------------------------------------------------------------------------------------------------------
# Duplicate grouping


@dataclass
class DuplicateGroups:
    """Which files are the same picture.  Every record is in exactly one group (most groups: one file)."""

    threshold: int
    group_of: dict[str, str]  # path -> group id
    members: dict[str, list[str]]  # group id -> sorted paths
    exact_sets: list[list[str]]  # paths sharing one sha256 (only sets of >= 2)
    #: (distance, path_a, path_b) for byte-different pairs within the threshold, closest first
    near_pairs: list[tuple[int, str, str]]
    #: (distance, path_a, path_b): the closest byte-different pair *not* merged - the margin above threshold
    closest_unmerged: tuple[int, str, str] | None
    seconds: float = 0.0

    @property
    def merged(self) -> dict[str, list[str]]:
        """Groups holding more than one file."""
        return {g: m for g, m in self.members.items() if len(m) > 1}

    @property
    def num_merged(self) -> int:
        return sum(1 for m in self.members.values() if len(m) > 1)


def _hash_bits(records: Sequence[ImageRecord]) -> np.ndarray:
    """records -> float32 (8, N, HASH_BITS) of +-1, so that a dot product gives HASH_BITS - 2*Hamming."""
    raw = np.frombuffer(b"".join(r.dhash for r in records), dtype=np.uint8)
    if raw.size != len(records) * 8 * HASH_BYTES:
        raise ValueError("every record needs an 8-transform dhash (scan_dataset computes it)")
    bits = np.unpackbits(raw.reshape(len(records), 8, HASH_BYTES), axis=2)[:, :, :HASH_BITS]
    s = bits.astype(np.float32) * 2.0 - 1.0
    return np.ascontiguousarray(s.transpose(1, 0, 2))


def _near_pairs(records: Sequence[ImageRecord], threshold: int, chunk: int | None = None):
    """All pairs (i < j) with dihedral-min Hamming distance <= threshold, plus the closest pair above it.

    All pairs x 8 transforms as float32 matrix products (BLAS), upper triangle only: on PBC (10,284
    images) that is ~2e11 flops, a few seconds on 2 cores, and exact (sums of +-1 are exact in float32).
    """
    n = len(records)
    if n < 2:
        return [], None
    s = _hash_bits(records)  # (8, n, B)
    if chunk is None:  # ~128 MB per (chunk x n) float32 block, whatever n is
        chunk = max(16, min(1024, (1 << 25) // n))
    ident = s[0]
    limit = HASH_BITS - 2 * threshold  # dot >= limit  <=>  distance <= threshold
    pairs: list[tuple[int, int, int]] = []
    best_unmerged = (-np.inf, -1, -1)
    for i0 in range(0, n, chunk):
        i1 = min(n, i0 + chunk)
        rows = ident[i0:i1]
        best = rows @ s[0, i0:].T
        for t in range(1, 8):
            np.maximum(best, rows @ s[t, i0:].T, out=best)
        # Keep j > i only: mask the diagonal block's lower triangle and diagonal.
        c = i1 - i0
        best[:, :c][np.tril_indices(c)] = -np.inf
        hit_r, hit_c = np.nonzero(best >= limit)
        for r, col in np.stack([hit_r, hit_c], axis=1).tolist():
            pairs.append((int(round((HASH_BITS - best[r, col]) / 2)), i0 + r, i0 + col))
        best[best >= limit] = -np.inf
        k = int(np.argmax(best))
        r, col = divmod(k, best.shape[1])
        if best[r, col] > best_unmerged[0]:
            best_unmerged = (float(best[r, col]), i0 + r, i0 + col)
    closest = None
    if best_unmerged[1] >= 0 and np.isfinite(best_unmerged[0]):
        closest = (int(round((HASH_BITS - best_unmerged[0]) / 2)), best_unmerged[1], best_unmerged[2])
    return pairs, closest


def group_duplicates(records: Sequence[ImageRecord], *,
                     threshold: int = NEAR_DUP_THRESHOLD) -> DuplicateGroups:
    """Group byte-identical (same sha256) and near-identical (flip/rotation/re-encode/resize) images.

    Union-find over: same sha256, and dihedral dHash distance <= `threshold`.  The group id is
    'g' + the first 12 hex digits of the smallest sha256 in the group: it depends only on the image bytes,
    not on file names or order, so the split is stable when files are renamed or moved between folders.
    """
    t0 = time.perf_counter()
    by_sha: dict[str, list[str]] = {}
    reps: list[ImageRecord] = []
    for r in sorted(records, key=lambda r: r.path):
        if r.sha256 not in by_sha:
            by_sha[r.sha256] = []
            reps.append(r)
        by_sha[r.sha256].append(r.path)

    parent = list(range(len(reps)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    raw_pairs, closest = _near_pairs(reps, threshold) if threshold >= 0 else ([], None)
    for _, i, j in raw_pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)

    comp_shas: dict[int, list[str]] = {}
    for i, r in enumerate(reps):
        comp_shas.setdefault(find(i), []).append(r.sha256)
    group_of: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for shas in comp_shas.values():
        gid = "g" + min(shas)[:12]
        paths = sorted(p for sha in shas for p in by_sha[sha])
        members[gid] = paths
        for p in paths:
            group_of[p] = gid
    members = dict(sorted(members.items()))
    near = sorted((d, reps[i].path, reps[j].path) for d, i, j in raw_pairs)
    closest_named = None if closest is None else (closest[0], reps[closest[1]].path, reps[closest[2]].path)
    exact = sorted(sorted(p) for p in by_sha.values() if len(p) > 1)
    return DuplicateGroups(threshold=threshold, group_of=group_of, members=members, exact_sets=exact,
                           near_pairs=near, closest_unmerged=closest_named,
                           seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------
# Split manifest


class ManifestRow(NamedTuple):
    path: str
    label: str
    sha256: str
    group: str
    split: str


@dataclass
class SplitManifest:
    """The split as data: one row per image, saved as a canonical CSV whose sha256 names the split.

    Canonical bytes (header `path,label,sha256,group,split`, rows sorted by path, UTF-8, '\\n' endings)
    make the sha256 equal on every OS, so later stages can record and check which split they used.
    """

    rows: list[ManifestRow]
    #: The data root the relative paths resolve against (default for `files`/`verify`); not saved.
    root: str | None = None

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
        """Write atomically; return the sha256 of the written bytes."""
        data = self.to_bytes()
        write_bytes(path, data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, path: str | os.PathLike, root: str | os.PathLike | None = None) -> "SplitManifest":
        """Read and validate a manifest; any problem is a one-line DatasetError with the line number."""
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
            canon = canonical_class(label)
            if canon is None:
                raise DatasetError(f"{path}:{line}: unknown label {label!r} (known: {', '.join(CLASSES)})")
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
        straddle = _straddling_groups(rows)
        if straddle:
            raise DatasetError(f"{path}: group {straddle[0]} appears in more than one split (leak)")
        return cls(rows, root=None if root is None else str(root))

    # -- queries
    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def paths(self, split: str) -> list[str]:
        """Relative paths of one split, sorted."""
        self._check_split(split)
        return [r.path for r in self.rows if r.split == split]

    def labels(self, split: str) -> np.ndarray:
        """Integer class indices (CLASSES order) of one split, aligned with `paths(split)`; int64."""
        self._check_split(split)
        return np.array([CLASS_INDEX[r.label] for r in self.rows if r.split == split], dtype=np.int64)

    def files(self, split: str, root: str | os.PathLike | None = None) -> tuple[list[str], np.ndarray]:
        """(absolute file paths, int64 label indices) of one split; `root` defaults to `self.root`."""
        base = self._root(root)
        return [os.path.join(base, *p.split("/")) for p in self.paths(split)], self.labels(split)

    def summary(self) -> dict[str, dict[str, int]]:
        """{split: {class: count}} for train/val/test x CLASSES, zeros included."""
        out = {s: {c: 0 for c in CLASSES} for s in SPLITS}
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


def require_all_classes(labels, where: str, why: str = "to compute metrics") -> None:
    """DatasetError naming the classes of CLASSES that have no sample in `labels` (CLASSES indices).

    Metrics over a split that lacks a class silently change meaning (balanced accuracy and macro-F1 average
    over fewer classes, the class's recall is undefined), so a manifest split must hold every class."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(CLASSES))
    absent = [c for c, n in zip(CLASSES, counts) if n == 0]  # noqa: B905 - equal lengths by minlength
    if absent:
        raise DatasetError(f"{where} has no images of class(es) {', '.join(absent)} "
                           f"({len(labels)} images); every class must be present {why} - "
                           "re-split the data (wbc-edge data split) or add images")


def label_conflicts(records: Sequence[ImageRecord],
                    groups: DuplicateGroups) -> list[tuple[str, list[tuple[str, str]]]]:
    """Duplicate groups whose files are filed under more than one class (one picture, two labels).

    [(group id, [(path, label), ...]), ...] in group order; only paths of `records` are considered.
    `make_split` refuses such a dataset; `wbc-edge data check` lists them.
    """
    label_of = {r.path: r.label for r in records}
    out = []
    for gid, paths in groups.members.items():
        items = [(p, label_of[p]) for p in paths if p in label_of]
        if len({label for _, label in items}) > 1:
            out.append((gid, items))
    return out


def _straddling_groups(rows: Iterable[ManifestRow]) -> list[str]:
    split_of: dict[str, str] = {}
    bad: list[str] = []
    for r in rows:
        s = split_of.setdefault(r.group, r.split)
        if s != r.split and r.group not in bad:
            bad.append(r.group)
    return sorted(bad)


def _order_key(seed: int, group_id: str) -> str:
    return hashlib.sha256(f"{seed}:{group_id}".encode("utf-8")).hexdigest()


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))  # half-up: no banker's rounding surprises in the counts


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
    for name, frac in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not (0.0 <= frac < 1.0) or math.isnan(frac):
            raise DatasetError(f"{name} must be in [0, 1), got {frac}")
    if test_fraction + val_fraction >= 1.0:
        raise DatasetError(f"test_fraction + val_fraction must be < 1 (train would be empty), got "
                           f"{test_fraction} + {val_fraction}")
    seen_paths: set[str] = set()
    for r in records:
        if r.path in seen_paths:
            raise DatasetError(f"duplicate path in records: {r.path}")
        seen_paths.add(r.path)
    if groups is None:
        groups = group_duplicates(records, threshold=threshold)
    by_path = {r.path: r for r in records}

    # Label conflicts: one picture, two classes.
    conflicts = label_conflicts(records, groups)
    if conflicts:
        gid, items = conflicts[0]
        labels = sorted({label for _, label in items})
        listed = ", ".join(f"{p} ({label})" for p, label in items[:4])
        more = f" and {len(items) - 4} more" if len(items) > 4 else ""
        raise DatasetError(f"label conflict: the same image (group {gid}) is filed under "
                           f"{' and '.join(labels)}: {listed}{more}; delete the wrong copy")
    class_groups: dict[str, list[tuple[str, int]]] = {c: [] for c in CLASSES}
    for gid, paths in groups.members.items():
        paths = [p for p in paths if p in by_path]
        if paths:
            class_groups[by_path[paths[0]].label].append((gid, len(paths)))
    missing = [p for p in by_path if p not in groups.group_of]
    if missing:
        raise DatasetError(f"record {missing[0]} is not in the duplicate groups given (stale groups?)")

    need = 1 + (test_fraction > 0) + (val_fraction > 0)
    used = "/".join(s for s, f in (("train", 1.0), ("val", val_fraction), ("test", test_fraction)) if f)
    split_of_group: dict[str, str] = {}
    for label in CLASSES:
        glist = class_groups[label]
        if not glist:
            continue
        if len(glist) < need:
            raise DatasetError(f"class '{label}' has only {len(glist)} distinct image group(s) "
                               f"({sum(s for _, s in glist)} files); need at least {need} so that each of "
                               f"{used} gets one")
        n = sum(size for _, size in glist)
        t_target = max(1, _round(test_fraction * n)) if test_fraction > 0 else 0
        v_target = max(1, _round(val_fraction * n)) if val_fraction > 0 else 0
        t_cnt = v_cnt = tr_cnt = 0
        for gid, size in sorted(glist, key=lambda g: _order_key(seed, g[0])):
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


# ---------------------------------------------------------------------------------------------------------
# One call: scan + group + split + save


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
    summary: dict[str, dict[str, int]]
    scan_seconds: float
    group_seconds: float


def split_dataset(root: str | os.PathLike, out_csv: str | os.PathLike, seed: int = 42, *,
                  test_fraction: float = 0.2, val_fraction: float = 0.1, strict: bool = False,
                  progress: bool = True, threshold: int = NEAR_DUP_THRESHOLD,
                  overwrite: bool = True) -> tuple[ScanResult, SplitManifest, SplitReport]:
    """Scan `root`, group duplicates, split and save the manifest atomically to `out_csv`."""
    if not overwrite and os.path.exists(out_csv):
        raise DatasetError(f"{out_csv}: already exists (use --force to overwrite)")
    scan = scan_dataset(root, strict=strict, progress=progress)
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
                         summary=manifest.summary(), scan_seconds=scan.seconds,
                         group_seconds=groups.seconds)
    return scan, manifest, report
