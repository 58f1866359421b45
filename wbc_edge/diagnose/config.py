"""What `wbc-edge diagnose` does (`DiagnoseConfig`) - TF-free; the CLI takes every default from here.

The calibration settings default to export's (`wbc_edge.export.config_default`), so the int8 model that is
diagnosed is the one `wbc-edge export` writes, and a K chosen here means the same layers at export.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import WbcEdgeError
from ..export.config import config_default
from ..export.inputs import domain_name, domain_root

#: The calibration-set arms of the report.  "foreign" adds a few images of each evaluated foreign domain to
#: the calibration set: a diagnostic only (it calibrates on images it is then judged on), never a default.
ARMS = ("clean", "augmented", "foreign")
#: Per-layer metrics the layers can be ranked by (see wbc_edge.diagnose.layers).
RANK_METRICS = ("rmse_over_scale", "mean_abs_error_pct_of_range", "max_abs_error_over_scale")


def _mixed_option(name: str):
    from ..export.variants import tuner

    return tuner("float_layers").options[name]


@dataclass
class DiagnoseConfig:
    """source: a run directory (model.keras + split.csv + run.json) or a .keras file.
    data: evaluated domains, "ROOT" or "NAME=ROOT"; a ROOT that is the run's data root means its split
        manifest's `split` split (default test), any other ROOT every valid image under it.
    data_root / split_manifest: the ImageFolder the split manifest refers to and the manifest (defaults as
        in export: run.json's config.data_root, split.csv beside the model); the calibration comes from its
        `calibration_split`, drawn exactly as export draws it.
    ks: how many of the worst layers stay float, one int8 model per K (0 = full int8).
    """

    source: str | os.PathLike
    data: Sequence[str] = ()
    out_dir: str | os.PathLike | None = None
    data_root: str | os.PathLike | None = None
    split_manifest: str | os.PathLike | None = None
    labels: Sequence[str] | None = None
    split: str = "test"
    limit: int | None = None              # stratified subset of each domain for agreement; None = all
    layer_images: int = 50                # stratified images per domain for the per-layer error table
    #: calibration images the layers are ranked on (evenly spaced) and by what: export's int8_mixed
    #: defaults, so a K chosen here keeps the same layers float there
    rank_images: int = field(default_factory=lambda: _mixed_option("rank_images"))
    rank_metric: str = field(default_factory=lambda: _mixed_option("rank_metric"))
    ks: Sequence[int] = (0, 1, 2, 4, 8)
    arms: Sequence[str] = ARMS
    foreign_images: int = 5               # per foreign domain, "foreign" arm only (diagnostic)
    calibration_size: int = field(default_factory=lambda: config_default("calibration_size"))
    calibration_split: str = field(default_factory=lambda: config_default("calibration_split"))
    calibration_augment: str | None = field(default_factory=lambda: config_default("calibration_augment"))
    calibration_augmented_fraction: float = field(
        default_factory=lambda: config_default("calibration_augmented_fraction"))
    seed: int = field(default_factory=lambda: config_default("seed"))
    latency_runs: int = 50                # timed invokes per model (1 thread, median)
    max_latency_increase_pct: float = 25.0  # the recommended K must stay within this over full int8
    num_threads: int | None = None        # interpreter threads for the agreement runs (None: min(2, CPUs))
    cache_dir: str | os.PathLike | None = None  # preprocessed pixels (npz) reused across runs

    def validate(self) -> None:
        """One-line errors for unusable settings, before anything is loaded."""
        if not self.data:
            raise WbcEdgeError("no domains: pass --data [NAME=]ROOT at least once")
        names = [domain_name(d) for d in self.data]
        if len(set(names)) != len(names):
            raise WbcEdgeError(f"--data: domain names must be unique, got {', '.join(names)} (use NAME=ROOT)")
        for spec in self.data:
            if not Path(domain_root(spec)).expanduser().is_dir():
                raise WbcEdgeError(f"--data {spec}: not a directory (expected an ImageFolder root or "
                                   "NAME=ROOT)")
        ks = list(self.ks)
        if not ks or any(int(k) < 0 for k in ks):
            raise WbcEdgeError(f"--k values must be >= 0, got {ks}")
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise WbcEdgeError(f"unknown calibration arm(s) {', '.join(bad)} (known: {', '.join(ARMS)})")
        if self.rank_metric not in RANK_METRICS:
            raise WbcEdgeError(f"unknown rank metric {self.rank_metric!r} (known: {', '.join(RANK_METRICS)})")
        for what, v, low in (("--layer-images", self.layer_images, 1), ("--rank-images", self.rank_images, 1),
                             ("--calibration-size", self.calibration_size, 1),
                             ("--latency-runs", self.latency_runs, 1),
                             ("--foreign-images", self.foreign_images, 1)):
            if int(v) < low:
                raise WbcEdgeError(f"{what} must be >= {low}, got {v}")
        if self.limit is not None and self.limit < 1:
            raise WbcEdgeError(f"--limit must be >= 1, got {self.limit}")
        if not 0.0 <= self.calibration_augmented_fraction <= 1.0:
            raise WbcEdgeError(f"--calibration-augmented-fraction must be in [0, 1], got "
                               f"{self.calibration_augmented_fraction}")

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, os.PathLike) else list(v) if isinstance(v, tuple) else v
        return out


def config_field_default(name: str):
    """The default of a DiagnoseConfig field (the CLI's option defaults come from here)."""
    f = next(f for f in dataclasses.fields(DiagnoseConfig) if f.name == name)
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()  # type: ignore[misc]
