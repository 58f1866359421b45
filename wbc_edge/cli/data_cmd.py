"""`wbc-edge data check|split`: look at a dataset folder before training on it, and fix the split.

No TensorFlow here: checking a dataset should take seconds, on any machine.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..data.augment import DEFAULT_PRESET, PRESETS
from ..core.preprocess import DEFAULT_SIZE

_ROOT = click.Path(exists=True, file_okay=False, dir_okay=True)
_FRACTION = click.FloatRange(0.0, 1.0, max_open=True)
_MAX_LISTED = 50  # bad files / examples printed before "... and N more (see --json)"


def _progress(no_progress: bool):
    """The scan's progress: click bars on stderr, or nothing with --no-progress."""
    from .progress import ClickProgress

    return ClickProgress(enabled=not no_progress)


@click.group("data")
def data() -> None:
    """Inspect a dataset folder (ImageFolder layout ROOT/<class>/<image>) and write the split."""


@data.command("check")
@click.argument("root", type=_ROOT)
@click.option("--strict", is_flag=True,
              help="Fail (exit 1) if any file is bad, naming the first in path order, instead of skipping "
                   "bad files (every file is still decoded first).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, writable=True),
              help="Also write everything found (all bad files, all duplicate groups) as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def check(root: str, strict: bool, json_out: str | None, no_progress: bool) -> None:
    """Counts per class, bad files, duplicate groups, image sizes."""
    from ..core.atomic import write_json
    from ..data import HASH_BITS, NEAR_DUP_THRESHOLD, label_conflicts, scan_dataset
    from ..data.dedup import THUMB_THRESHOLD

    t0 = time.perf_counter()
    scan = scan_dataset(root, strict=strict, progress=_progress(no_progress))
    groups = scan.duplicates(NEAR_DUP_THRESHOLD)
    conflicts = [(gid, [f"{p} ({label})" for p, label in items])
                 for gid, items in label_conflicts(scan.records, groups)]
    total_s = time.perf_counter() - t0

    echo = click.echo
    echo(f"Dataset: {scan.root}")
    echo(f"{len(scan.records)} valid images, {len(scan.bad)} bad files, {len(scan.ignored)} ignored")
    echo("")
    counts = scan.class_counts
    w = max(12, *(len(c) for c in scan.labels))
    echo(f"{len(scan.labels)} classes (one per folder):")
    echo(f"  {'class':<{w}} {'images':>7}  folder")
    for c in scan.labels:
        folder = scan.class_dirs.get(c)
        echo(f"  {c:<{w}} {counts[c]:>7}  {folder + '/' if folder else '(missing)'}")
    echo(f"  {'total':<{w}} {len(scan.records):>7}")

    echo("")
    if scan.bad:
        echo(f"Bad files (skipped): {len(scan.bad)}")
        for b in scan.bad[:_MAX_LISTED]:
            echo(f"  {b.path}: {b.reason}")
        if len(scan.bad) > _MAX_LISTED:
            echo(f"  ... and {len(scan.bad) - _MAX_LISTED} more" + (" (see --json)" if not json_out else ""))
    else:
        echo("Bad files: none")
    if scan.ignored:
        echo(f"Ignored (not images): {', '.join(b.path for b in scan.ignored[:10])}"
             + (f" ... (+{len(scan.ignored) - 10})" if len(scan.ignored) > 10 else ""))

    echo("")
    hist = scan.size_histogram()
    echo(f"Image sizes (width x height), {len(hist)} distinct:")
    for (w, h), n in hist[:8]:
        echo(f"  {f'{w}x{h}':>11} {n:>7}")
    if len(hist) > 8:
        echo(f"  {'other':>11} {sum(n for _, n in hist[8:]):>7}")
    echo("Modes: " + ", ".join(f"{m} {n}" for m, n in scan.mode_counts().items()))

    echo("")
    merged = groups.merged
    echo(f"Duplicates (dihedral dHash, near if distance <= {groups.threshold} of {HASH_BITS} bits and the "
         f"thumbnails differ by <= {THUMB_THRESHOLD:g} grey levels on the cell; groups never chain):")
    echo(f"  exact duplicate sets (identical bytes): {len(groups.exact_sets)}")
    echo(f"  near-duplicate pairs (different bytes):  {len(groups.near_pairs)}")
    echo(f"  groups that merged more than one file:   {len(merged)} "
         f"({sum(len(m) for m in merged.values())} files); {len(groups.members)} groups in all")
    declared = scan.declared_groups()
    if declared:
        echo(f"  declared groups (the `group` column of {scan.root}/manifest.csv): {len(set(declared.values()))} "
             f"for {len(declared)} files, merged in: files sharing one never go to different splits")
    for gid, paths in list(merged.items())[:5]:
        echo(f"    {gid}: {', '.join(paths[:4])}" + (f" (+{len(paths) - 4})" if len(paths) > 4 else ""))
    for d, a, b in groups.near_pairs[:5]:
        echo(f"    near: {a} ~ {b} (distance {d})")
    if groups.closest_unmerged:
        d, a, b = groups.closest_unmerged
        echo(f"  closest pair above the hash threshold: distance {d} ({a} ~ {b})")
    if conflicts:
        echo(f"  LABEL CONFLICTS (same image in two classes): {len(conflicts)} - `data split` will refuse")
        for gid, items in conflicts[:_MAX_LISTED]:
            echo(f"    {gid}: {', '.join(items)}")

    echo("")
    echo(f"Time: {total_s:.1f} s (scan {scan.seconds:.1f} s, duplicate search {groups.seconds:.1f} s)")

    if json_out:
        write_json(json_out, {
            "root": scan.root,
            "num_images": len(scan.records),
            "labels": scan.labels.to_list(),
            "class_counts": counts,
            "class_dirs": scan.class_dirs,
            "missing_classes": scan.missing_classes,
            "bad": [{"path": b.path, "reason": b.reason} for b in scan.bad],
            "ignored": [{"path": b.path, "reason": b.reason} for b in scan.ignored],
            "sizes": [{"width": w, "height": h, "count": n} for (w, h), n in hist],
            "modes": scan.mode_counts(),
            "duplicates": {
                "hash": f"dihedral dHash {HASH_BITS} bits",
                "threshold": groups.threshold,
                "num_groups": len(groups.members),
                "exact_sets": groups.exact_sets,
                "near_pairs": [{"distance": d, "a": a, "b": b} for d, a, b in groups.near_pairs],
                "merged_groups": merged,
                "closest_unmerged": (None if groups.closest_unmerged is None else
                                     dict(distance=groups.closest_unmerged[0], a=groups.closest_unmerged[1],
                                          b=groups.closest_unmerged[2])),
                "label_conflicts": {gid: items for gid, items in conflicts},
            },
            "seconds": {"total": round(total_s, 3), "scan": round(scan.seconds, 3),
                        "duplicates": round(groups.seconds, 3)},
        })
        echo(f"Wrote {json_out}")


@data.command("split")
@click.argument("root", type=_ROOT)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, writable=True),
              help="Split manifest CSV to write (path,label,sha256,group,split).")
@click.option("--seed", default=42, show_default=True, type=int, help="Split seed.")
@click.option("--test-fraction", default=0.2, show_default=True, type=_FRACTION,
              help="Fraction of all images (per class) for test.")
@click.option("--val-fraction", default=0.1, show_default=True, type=_FRACTION,
              help="Fraction of all images (per class) for validation, carved out of train.")
@click.option("--strict", is_flag=True,
              help="Fail if any file is bad, naming the first in path order, instead of skipping bad files.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def split(root: str, out: str, seed: int, test_fraction: float, val_fraction: float, strict: bool,
          force: bool, no_progress: bool) -> None:
    """Write a stratified, duplicate-aware, reproducible train/val/test split manifest."""
    from ..data import HASH_BITS, SPLITS, split_dataset

    t0 = time.perf_counter()
    scan, manifest, rep = split_dataset(root, out, seed, test_fraction=test_fraction,
                                        val_fraction=val_fraction, strict=strict,
                                        progress=_progress(no_progress), overwrite=force)
    echo = click.echo
    if scan.bad:
        echo(f"Skipped {len(scan.bad)} bad file(s), first: {scan.bad[0].path}: {scan.bad[0].reason} "
             f"(see `wbc-edge data check`)")
    summary = rep.summary
    w = max(12, *(len(c) for c in scan.labels))
    echo(f"  {'class':<{w}}" + "".join(f"{s:>8}" for s in SPLITS) + f"{'total':>8}")
    for c in scan.labels:
        row = [summary[s][c] for s in SPLITS]
        echo(f"  {c:<{w}}" + "".join(f"{n:>8}" for n in row) + f"{sum(row):>8}")
    tot = [sum(summary[s].values()) for s in SPLITS]
    echo(f"  {'total':<{w}}" + "".join(f"{n:>8}" for n in tot) + f"{sum(tot):>8}")
    echo(f"Groups: {rep.num_groups} for {rep.num_files} files; {rep.merged_groups} merged more than one file "
         f"({rep.files_in_merged_groups} files; {rep.exact_duplicate_sets} exact sets, "
         f"{rep.near_duplicate_pairs} near pairs at <= {rep.threshold}/{HASH_BITS} bits); "
         f"no group straddles splits")
    echo(f"Seed {seed}, test {test_fraction:g}, val {val_fraction:g}; "
         f"{time.perf_counter() - t0:.1f} s")
    echo(f"Wrote {out}")
    echo(f"sha256 {rep.sha256}")


@data.command("preview-aug")
@click.argument("root", type=_ROOT)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--augment", "aug_preset", type=click.Choice(list(PRESETS)),
              default=DEFAULT_PRESET, show_default=True, help="Augmentation recipe (as in `wbc-edge train --augment`).")
@click.option("--per-class", type=click.IntRange(1, 20), default=2, show_default=True, help="Rows per class.")
@click.option("--views", type=click.IntRange(1, 16), default=6, show_default=True, help="Augmented views per row.")
@click.option("--input-size", type=click.IntRange(min=32), default=DEFAULT_SIZE, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def preview_aug(root: str, out: str, aug_preset: str, per_class: int, views: int, input_size: int, seed: int) -> None:
    """Write a PNG grid: each row an image of ROOT, its clean input, augmented training views and the
    held-out 'shifted val' view; prints the augmentation cost per view."""
    from ..data.augment import preset
    from ..data.augment_preview import preview_grid
    from ..data import class_ranks, per_class_indices, scan_dataset

    scan = scan_dataset(root, progress=False)
    y = scan.label_indices()
    rank = class_ranks(y, seed)  # rows: class by class, each in its seeded order
    picks = sorted(per_class_indices(y, per_class, seed).tolist(), key=lambda i: (y[i], rank[i]))
    paths = [str(Path(scan.root) / scan.records[i].path) for i in picks]
    labels = [scan.records[i].label for i in picks]
    info = preview_grid(paths, labels, preset(aug_preset), out, views=views, size=input_size, seed=seed)
    click.echo(f"Wrote {out}: {info['images']} images x {info['views']} '{aug_preset}' views "
               f"({info['ms_per_view']:.1f} ms per augmented view on this CPU)")
