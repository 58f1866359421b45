"""export/manifest.json: the record of one export, written by `export_model`, read by bench and `metadata`.

TF-free (bench imports it).  The top level holds the sources (model, split manifest sha256s), the labels,
versions, calibration, parity reference and config; `variants` is a list with one entry per variant, in
registry order: {variant, file, status ("ok" | "failed"), stage (where it failed, else null), reason,
bytes, sha256, flatbuffer_bytes, flatbuffer_sha256, tflite_metadata, input, output, converter, options,
parity, parity_domains, ...}.  Readers should go through `manifest_variants` / `entry_for_file`, which
need only `file` (and take every other key as optional), so older manifests read the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core import atomic
from ..core.errors import ModelFileError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1

DETERMINISM_NOTE = ("float32/float16/dynamic/int8 are byte-identical across re-runs with the same inputs and "
                    "library versions on the same machine (seeded calibration sample, deterministic "
                    "converter). "
                    "qat_int8 is seeded and was identical in our re-runs too, but is not guaranteed to be "
                    "(multi-threaded float training). The embedded contract records versions and platform: "
                    "compare flatbuffer_sha256 across machines.")


@dataclass(frozen=True)
class ManifestEntry:
    """One variant of a manifest, as any reader needs it; `raw` is the whole entry."""

    variant: str | None
    file: str
    status: str | None
    stage: str | None
    reason: str | None
    sha256: str | None
    parity: dict | None
    options: dict | None
    raw: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def manifest_path(path: str | os.PathLike) -> Path:
    """manifest.json itself, or the one inside a folder."""
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest (a path to it or to its folder) as a dict; one-line ModelFileError when unusable."""
    p = manifest_path(path)
    data = atomic.read_json(p, ModelFileError, missing="export manifest not found",
                            unreadable="not a readable export manifest")
    if not isinstance(data, dict):
        raise ModelFileError(f"{p}: not a JSON object")
    return data


def write_manifest(path: str | os.PathLike, manifest: dict) -> Path:
    p = manifest_path(path)
    atomic.write_json(p, manifest)
    return p


def manifest_variants(manifest: dict) -> list[ManifestEntry]:
    """Every variant entry of a manifest dict that names a file, in the manifest's order."""
    out = []
    for e in manifest.get("variants") or []:
        if not isinstance(e, dict) or not isinstance(e.get("file"), str):
            continue
        out.append(ManifestEntry(variant=e.get("variant"), file=e["file"], status=e.get("status"),
                                 stage=e.get("stage"), reason=e.get("reason"), sha256=e.get("sha256"),
                                 parity=e.get("parity"), options=e.get("options"), raw=e))
    return out


def entry_for_file(tflite_path: str | os.PathLike) -> tuple[ManifestEntry | None, dict | None]:
    """(the manifest entry of this .tflite file, the manifest's parity_reference) from the manifest.json
    beside it; (None, None) when there is none or it does not list the file (or cannot be read)."""
    p = Path(tflite_path)
    try:
        manifest = read_manifest(p.parent / MANIFEST_NAME)
    except ModelFileError:
        return None, None
    for e in manifest_variants(manifest):
        if e.file == p.name:
            return e, manifest.get("parity_reference")
    return None, None
