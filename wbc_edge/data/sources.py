"""Several labelled source labs as one training set: each split on its own, then joined under one root.

Why each on its own: a leak-free split is per lab (its own duplicate groups and declared cell groups), and a
small lab must get its share of val and test cells, which one stratified split over 10,000 + 300 images would
not guarantee.  Why one root: every later stage (export's calibration and parity, evaluate, crossdomain,
adapt's replay) resolves a run's split against one data root.  The root is RUN_DIR/sources/, a folder of
links (sources/pbc -> the PBC folder, ...), and a manifest path is SOURCE/class/file: the first part of every
path says which lab the image came from.  Moving the run to another machine means re-pointing those links
(`link_sources` again), not editing the manifest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DatasetError
from ..core.labels import Labels
from ..core.progress import Progress, resolve
from .manifest import ManifestRow, SplitManifest
from .scan import scan_dataset
from .split import make_split

#: RUN_DIR/SOURCES_DIR holds one link per source lab; it is the run's data root.
SOURCES_DIR = "sources"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Source:
    name: str   # a folder-safe name: the first part of the source's manifest paths
    root: str   # the lab's ImageFolder

    def to_dict(self) -> dict:
        return {"name": self.name, "root": self.root}


def parse_sources(specs) -> list[Source]:
    """`[NAME=]ROOT` strings -> Sources (NAME defaults to the folder's name); one-line errors for a missing
    folder, a bad or repeated name."""
    out: list[Source] = []
    for spec in specs:
        name, sep, root = str(spec).partition("=")
        if not sep:
            name, root = Path(spec).resolve().name, str(spec)
        if not _NAME.match(name):
            raise DatasetError(f"source {spec!r}: name {name!r} must be letters, digits, '_', '.', '-' (it becomes "
                               "a folder name)")
        if not Path(root).is_dir():
            raise DatasetError(f"source {spec!r}: {root} is not a directory")
        if any(s.name == name for s in out):
            raise DatasetError(f"two sources are named {name!r}; give them NAME=ROOT")
        out.append(Source(name, root))
    if not out:
        raise DatasetError("no data given")
    return out


def source_of(manifest_path: str) -> str:
    """The source name of a multi-source manifest path (its first part)."""
    return manifest_path.split("/", 1)[0]


def link_sources(run_dir: str | os.PathLike, sources: list[Source]) -> Path:
    """RUN_DIR/sources/<name> -> each source's absolute folder (created, or checked when there); returns the
    root.  A link pointing elsewhere is replaced only when it is one of ours (a symlink), never a real folder."""
    root = Path(run_dir) / SOURCES_DIR
    root.mkdir(parents=True, exist_ok=True)
    for s in sources:
        link, target = root / s.name, Path(s.root).resolve()
        if link.is_symlink():
            if link.resolve() == target:
                continue
            link.unlink()
        elif link.exists():
            raise DatasetError(f"{link}: exists and is not a link made by wbc-edge; remove it or choose another --out")
        tmp = root / f".{s.name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)  # atomic: the link is either the old one or the new one
    return root


@dataclass
class SourceSplit:
    manifest: SplitManifest
    labels: Labels
    #: per source: {"name", "root", "images", "groups", "missing_classes", "splits": {split: n}}
    report: list[dict]


def split_sources(sources: list[Source], *, seed: int = 42, test_fraction: float = 0.2, val_fraction: float = 0.1,
                  labels: Labels | None = None, progress: Progress | bool | None = True) -> SourceSplit:
    """Scan and split each source on its own (its duplicate groups + its manifest.csv `group` column) and join
    the rows under SOURCE/ prefixes.  The classes are `labels`, else the first source's; a later source with a
    class outside them is an error listing the difference, a source lacking one of them is allowed (reported)."""
    progress = resolve(progress)
    rows: list[ManifestRow] = []
    report = []
    for i, s in enumerate(sources):
        progress.say(f"  source {s.name}: scanning {s.root} ...")
        first = scan_dataset(s.root, progress=False)
        if labels is None and i == 0:
            labels = first.labels
        extra = sorted(set(first.labels) - set(labels))
        if extra:
            raise DatasetError(f"source {s.name} ({s.root}) has class(es) {', '.join(extra)} that "
                               f"{'the labels asked for' if i == 0 else 'source ' + sources[0].name} do(es) not have "
                               f"({', '.join(labels)}); rename or remove the folder(s)")
        scan = scan_dataset(s.root, labels=labels, progress=False) if list(first.labels) != list(labels) else first
        groups = scan.duplicates()
        part = make_split(scan.records, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction,
                          groups=groups)
        for r in part.rows:
            rows.append(ManifestRow(f"{s.name}/{r.path}", r.label, r.sha256, f"{s.name}:{r.group}", r.split))
        counts = {sp: sum(1 for r in part.rows if r.split == sp) for sp in ("train", "val", "test")}
        report.append({"name": s.name, "root": s.root, "images": len(scan.records),
                       "groups": len({r.group for r in part.rows}), "missing_classes": scan.missing_classes,
                       "bad_files": len(scan.bad), "splits": counts})
        note = f"; no images of {', '.join(scan.missing_classes)}" if scan.missing_classes else ""
        progress.say(f"  source {s.name}: {len(scan.records)} images in {report[-1]['groups']} groups -> "
                     + ", ".join(f"{k} {v}" for k, v in counts.items()) + note)
    return SourceSplit(SplitManifest(rows), labels, report)


__all__ = ["SOURCES_DIR", "Source", "SourceSplit", "link_sources", "parse_sources", "source_of", "split_sources"]
