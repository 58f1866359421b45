"""Which files are the same picture: a flip/rotation-invariant perceptual hash and duplicate grouping.

Why: if two copies of one cell (re-saved, flipped, rotated, re-encoded) land in train and test, test accuracy
measures memory, not generalisation.  Byte-identical *and* visually near-identical images are grouped here,
and the split (`wbc_edge.data.split`) never lets a group straddle train/val/test.  Group ids depend only on
image bytes, so a split is stable when files are renamed or moved.

Numpy + Pillow only.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

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
#: Side of the grey thumbnail that confirms a near pair (`ImageRecord.thumb`).
THUMB_SIZE = 32
#: Max mean |grey difference| (0-255) between two thumbnails, over the pixels where either differs from its own
#: border (the cell, not a flat background), best of the 8 symmetries, for a dHash-near pair to be one picture.
#: Why a second test: on a flat background every left/right comparison is "not brighter", so dHash bits agree
#: there whatever the cell - Tecom's segmented cells on white are 18-36 bits apart although they are different
#: cells.  Measured: flipped/rotated/JPEG q50 or 10 %-resized copies of 60 PBC cells <= 0.3; PBC's two re-saved
#: pairs 3.6 and 6.4; Tecom's two shifted re-crops of one cell 6.9 and 7.4; Tecom's different cells >= 18.1.
THUMB_THRESHOLD = 12.0


class HashedImage(Protocol):
    """What grouping needs of a record (`wbc_edge.data.ImageRecord` has it)."""

    path: str
    label: str
    sha256: str
    dhash: bytes
    thumb: bytes  # THUMB_SIZE^2 grey bytes, or b"" (then dHash alone decides)


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


def thumbnail(im: Image.Image) -> bytes:
    """THUMB_SIZE x THUMB_SIZE grey thumbnail bytes (bilinear), the evidence `thumb_distance` compares."""
    return np.asarray(im.convert("L").resize((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR),
                      dtype=np.uint8).tobytes()


def _foreground(g: np.ndarray) -> np.ndarray:
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    return np.abs(g - np.median(border)) > 6


def thumb_distance(a: bytes, b: bytes) -> float:
    """Mean |grey difference| of two thumbnails over the pixels that are not flat background in both, for the
    best of b's 8 flips/rotations (0 when both are entirely background)."""
    ga = np.frombuffer(a, dtype=np.uint8).reshape(THUMB_SIZE, THUMB_SIZE).astype(np.float32)
    gb = np.frombuffer(b, dtype=np.uint8).reshape(THUMB_SIZE, THUMB_SIZE).astype(np.float32)
    fa, best = _foreground(ga), np.inf
    for k in range(4):
        for t in (np.rot90(gb, k), np.rot90(gb, k)[:, ::-1]):
            m = fa | _foreground(t)
            best = min(best, float(np.abs(ga - t)[m].mean()) if m.any() else 0.0)
    return best


def hash_distance(a: bytes, b: bytes) -> int:
    """Near-duplicate distance of two `ImageRecord.dhash` values: the minimum Hamming distance between
    a's identity hash and any of b's 8 transform hashes."""
    ha = np.unpackbits(np.frombuffer(a[:HASH_BYTES], dtype=np.uint8))[:HASH_BITS]
    hb = np.unpackbits(np.frombuffer(b, dtype=np.uint8).reshape(8, HASH_BYTES), axis=1)[:, :HASH_BITS]
    return int((hb != ha).sum(axis=1).min())


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


def _hash_bits(records: Sequence[HashedImage]) -> np.ndarray:
    """records -> float32 (8, N, HASH_BITS) of +-1, so that a dot product gives HASH_BITS - 2*Hamming."""
    raw = np.frombuffer(b"".join(r.dhash for r in records), dtype=np.uint8)
    if raw.size != len(records) * 8 * HASH_BYTES:
        raise ValueError("every record needs an 8-transform dhash (scan_dataset computes it)")
    bits = np.unpackbits(raw.reshape(len(records), 8, HASH_BYTES), axis=2)[:, :, :HASH_BITS]
    s = bits.astype(np.float32) * 2.0 - 1.0
    return np.ascontiguousarray(s.transpose(1, 0, 2))


def _near_pairs(records: Sequence[HashedImage], threshold: int, chunk: int | None = None):
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


def group_duplicates(records: Sequence[HashedImage], *,
                     threshold: int = NEAR_DUP_THRESHOLD) -> DuplicateGroups:
    """Group byte-identical (same sha256) and near-identical (flip/rotation/re-encode/resize) images.

    Same sha256 always; near-identical (dihedral dHash distance <= `threshold`, confirmed by the thumbnails
    where the records have them: `THUMB_THRESHOLD`) by complete linkage: pairs
    are merged closest first, and two groups only where *every* pair across them is within the threshold, so
    a group's diameter never exceeds it.  Why not plain union-find over the pairs: it chains - on Tecom's small,
    near-uniform crops 45 different cells of all five classes were linked A~B~C... into one "duplicate" group
    (a false label conflict), though no two ends of the chain looked alike.  Re-saved, flipped or re-encoded
    copies of one picture are all close to each other, so they still form one group.

    The group id is 'g' + the first 12 hex digits of the smallest sha256 in the group: it depends only on the
    image bytes, not on file names or order, so the split is stable when files are renamed or moved.
    """
    t0 = time.perf_counter()
    by_sha: dict[str, list[str]] = {}
    reps: list[HashedImage] = []
    for r in sorted(records, key=lambda r: r.path):
        if r.sha256 not in by_sha:
            by_sha[r.sha256] = []
            reps.append(r)
        by_sha[r.sha256].append(r.path)

    raw_pairs, closest = _near_pairs(reps, threshold) if threshold >= 0 else ([], None)
    raw_pairs = [(d, i, j) for d, i, j in raw_pairs
                 if not (reps[i].thumb and reps[j].thumb)
                 or thumb_distance(reps[i].thumb, reps[j].thumb) <= THUMB_THRESHOLD]
    near = {(i, j) if i < j else (j, i) for _, i, j in raw_pairs}
    comp = {i: [i] for i in range(len(reps))}  # root -> members
    root = list(range(len(reps)))
    for _, i, j in sorted(raw_pairs):  # closest first; ties by index, so the result does not depend on order
        ri, rj = root[i], root[j]
        if ri == rj or not all(((a, b) if a < b else (b, a)) in near for a in comp[ri] for b in comp[rj]):
            continue
        keep, gone = min(ri, rj), max(ri, rj)
        for m in comp[gone]:
            root[m] = keep
        comp[keep] += comp.pop(gone)

    def find(x: int) -> int:
        return root[x]

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


def merge_declared_groups(records: Sequence[HashedImage], groups: DuplicateGroups,
                          declared: dict[str, str]) -> DuplicateGroups:
    """`groups` with the groups a dataset declares itself (path -> its own group id, e.g. one id per cell or
    per slide) merged in: files sharing a declared id, or a duplicate group, end up in one group.

    Why: shifted crops of one cell (LISC: 1,218 crops of 224 cells) are not near-duplicates to a hash, so
    only the dataset's own `group` column keeps them out of two splits.  Group ids follow the same rule
    ('g' + the smallest sha256 prefix in the group), so a dataset without declared groups is unchanged.
    """
    if not declared:
        return groups
    sha = {r.path: r.sha256 for r in records}
    parent = {g: g for g in groups.members}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_of: dict[str, str] = {}
    for path in sorted(declared):
        if path not in groups.group_of:
            continue  # a manifest row for a file that is not (or no longer) there
        g = groups.group_of[path]
        other = first_of.setdefault(declared[path], g)
        a, b = find(g), find(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    comps: dict[str, list[str]] = {}
    for g, paths in groups.members.items():
        comps.setdefault(find(g), []).extend(paths)
    group_of: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    for paths in comps.values():
        gid = "g" + min(sha[p] for p in paths)[:12]
        members[gid] = sorted(paths)
        for p in paths:
            group_of[p] = gid
    return dataclasses.replace(groups, group_of=group_of, members=dict(sorted(members.items())))


def label_conflicts(records: Sequence[HashedImage],
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


__all__ = ["DIHEDRAL", "HASH_BITS", "HASH_BYTES", "HASH_SIZE", "NEAR_DUP_THRESHOLD", "THUMB_SIZE", "THUMB_THRESHOLD", "DuplicateGroups",
           "HashedImage", "dihedral_dhash", "group_duplicates", "hash_distance", "label_conflicts", "merge_declared_groups", "thumb_distance",
           "thumbnail"]
