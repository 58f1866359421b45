"""The local folder and its split: a seeded, stratified, group-aware hold-out that works for tiny sets.

Why not `wbc_edge.data.make_split`: a lab may have 5 images of one class and 50 of another, or none at all.
Per class, duplicate groups (exact and near-identical copies, `wbc_edge.data.group_duplicates`) are taken in
sha256(seed:group) order - the same machine-independent order as `make_split` - and fill the adapt set up to
`per_class` images (or all but `holdout_fraction`), always leaving `min_holdout` images of every class for
testing.  A group never straddles the adapt / held-out line.  The split is written as an ordinary split.csv
(adapt = "train"), so `evaluate` and `export` read it like any run's.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.errors import DatasetError
from ..core.labels import Labels
from ..core.progress import Progress, resolve

#: Bad-file reasons that are never the user's images (skipped silently, listed on request).
HARMLESS = ("system file, not an image",)


def scan_local(root: str | Path, labels: Labels, *, skip_bad: bool = False,
               progress: Progress | bool | None = None):
    """Scan the local ImageFolder against the source model's labels; a one-line DatasetError for anything
    that makes it unusable (unknown class folder, unreadable file, fewer than two classes)."""
    from ..data import scan_dataset

    scan = scan_dataset(root, labels=labels, progress=resolve(progress))
    real_bad = [b for b in scan.bad if b.reason not in HARMLESS]
    if real_bad and not skip_bad:
        b = real_bad[0]
        more = f" (and {len(real_bad) - 1} more bad files)" if len(real_bad) > 1 else ""
        raise DatasetError(f"{Path(root) / b.path}: {b.reason}{more}; fix or remove it, or pass --skip-bad")
    present = [c for c, n in scan.class_counts.items() if n > 0]
    if len(present) < 2:
        raise DatasetError(f"{root}: only one class ({', '.join(present) or 'none'}) has images; adapting "
                           f"needs labelled images of at least two classes (folders: {', '.join(labels)})")
    return scan


def _split_mixed_group(gid: str, paths: list[str], by_path: dict, group_of: dict,
                       class_groups: dict[str, list]) -> None:
    """A duplicate group whose files carry different labels.  The same bytes under two classes is a real
    conflict (DatasetError).  A near-duplicate group spanning classes is not: on small, tight crops with a flat
    background (e.g. 120 px) different cells can hash alike - such a group is split by class (still leak-free
    within each class)."""
    shas: dict[str, set[str]] = {}
    for p in paths:
        shas.setdefault(by_path[p].sha256, set()).add(by_path[p].label)
    clash = [p for p in paths if len(shas[by_path[p].sha256]) > 1]
    if clash:
        listed = ", ".join(f"{p} ({by_path[p].label})" for p in clash[:4])
        raise DatasetError(f"label conflict: the same image is filed under "
                           f"{' and '.join(sorted(shas[by_path[clash[0]].sha256]))}: {listed}; "
                           "delete the wrong copy")
    for label in sorted({by_path[p].label for p in paths}):
        sub = [p for p in paths if by_path[p].label == label]
        for p in sub:
            group_of[p] = f"{gid}-{label}"
        class_groups.setdefault(label, []).append((f"{gid}-{label}", sub))


def make_adapt_split(records, groups, *, per_class: int | None = None, holdout_fraction: float = 0.3,
                     min_holdout: int = 1, val_share: float = 0.5, seed: int = 42):
    """Seeded, stratified, group-aware split of a small local set into train (adapt) / val / test.

    Per class with n images: the adapt target is min(per_class, n - min_holdout) with per_class, else
    n - max(min_holdout, round(holdout_fraction * n)).  Groups in sha256(f"{seed}:{group}") order fill the
    adapt set while they fit; the other groups are held out: the first one goes to test, then val is filled
    up to floor(val_share * held-out) images, the rest is test.  Machine-independent (no RNG, no hash()).
    Classes are split independently, so the result does not depend on the class list's order.
    """
    from ..data import ManifestRow, SplitManifest, group_order_key

    by_path = {r.path: r for r in records}
    class_groups: dict[str, list[tuple[str, list[str]]]] = {}
    group_of = dict(groups.group_of)
    for gid, paths in groups.members.items():
        paths = [p for p in paths if p in by_path]
        if not paths:
            continue
        names = {by_path[p].label for p in paths}
        if len(names) > 1:
            _split_mixed_group(gid, paths, by_path, group_of, class_groups)
        else:
            class_groups.setdefault(names.pop(), []).append((gid, paths))
    split_of: dict[str, str] = {}
    for label in sorted(class_groups):
        glist = sorted(class_groups[label], key=lambda g: group_order_key(seed, g[0]))
        n = sum(len(p) for _, p in glist)
        if per_class is not None:
            target = max(0, min(per_class, n - min_holdout))
        else:
            target = max(0, n - max(min_holdout, int(math.floor(holdout_fraction * n + 0.5))))
        cnt = 0
        held: list[tuple[str, list[str]]] = []
        for gid, paths in glist:
            if cnt + len(paths) <= target:
                split_of[gid] = "train"
                cnt += len(paths)
            else:
                held.append((gid, paths))
        val_target = int(math.floor(val_share * sum(len(p) for _, p in held)))
        v_cnt = t_cnt = 0
        for gid, paths in held:
            if t_cnt > 0 and v_cnt + len(paths) <= val_target:
                split_of[gid] = "val"
                v_cnt += len(paths)
            else:
                split_of[gid] = "test"
                t_cnt += len(paths)
    rows = [ManifestRow(r.path, r.label, r.sha256, group_of[r.path], split_of[group_of[r.path]]) for r in records]
    return SplitManifest(rows)


def split_table(manifest, labels: Labels) -> str:
    """The split sizes per class, as the table `wbc-edge adapt` prints."""
    s = manifest.summary(labels)
    lines = [f"  {'class':<12} {'adapt':>6} {'val':>5} {'test':>5}"]
    for c in labels:
        lines.append(f"  {c:<12} {s['train'][c]:>6} {s['val'][c]:>5} {s['test'][c]:>5}")
    lines.append(f"  {'total':<12} {sum(s['train'].values()):>6} {sum(s['val'].values()):>5} "
                 f"{sum(s['test'].values()):>5}")
    return "\n".join(lines)
