"""What `wbc-edge adapt` does, as one typed record: `AdaptConfig` (the CLI's defaults are its defaults).

Why a dataclass: the whole recipe is written to RUN_DIR/config.json and run.json, so an adapted model can be
traced to the exact settings, and the benchmark (benchmarks/adapt/) runs the same defaults the CLI runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.augment import AugmentConfig, preset
from ..core.errors import WbcEdgeError


@dataclass
class AdaptConfig:
    """Everything `adapt` does, recorded in RUN_DIR/config.json and run.json."""

    source: str                           # a run directory (model.keras, split.csv, run.json) or a .keras file
    data_root: str                        # the local ImageFolder (LOCAL_ROOT); the run's data root
    out_dir: str
    # -- the local split
    per_class: int | None = None          # images per class for adapting (the rest is held out); None: below
    holdout_fraction: float = 0.3         # without per_class: share of each class held out
    min_holdout: int = 1                  # held-out images per class at least (so test has every class)
    val_share: float = 0.5                # of the held-out images: share for calibration (val); rest is test
    seed: int = 42
    skip_bad: bool = False                # skip unreadable files instead of refusing the folder
    # -- augmentation and training
    #: augmentation of the cached views of the adapt images (and of the replay images).  "scale" (geometry,
    #: blur, resolution, JPEG, noise, mild colour), not train's "robust": one lab's stain and camera are fixed,
    #: and strong colour jitter hid the colour cues the few local images teach (dev seeds, val halves: Tecom
    #: k=10 +4.7 pp, CellaVision k=5 +3.5 pp; benchmarks/adapt/README.md)
    aug_preset: str = "scale"
    augment: AugmentConfig = field(default_factory=lambda: preset("scale"))
    aug_views: int = 6                    # augmented views cached per adapt image (+ the clean one)
    #: first MobileNetV2 block that is fine-tuned (1-16); everything below it is frozen and cached.  13 is
    #: train's cached-mode cut; a lower cut also adapts the lower blocks (stain, blur and scale are input-level
    #: shifts) at 3-7x the cost per step (benchmarks/adapt/README.md)
    adapt_from: int = 13
    head_epochs: int = 0                  # phase 1: head re-fit on pooled features (for a new head; 0 = skip)
    head_learning_rate: float = 1e-3
    finetune_epochs: float = 15.0         # phase 2: passes over the local adapt images ...
    #: ... but at least this many steps.  160, not 80: with 5-20 images per class the schedule then spends
    #: longer at a low rate with the distilled replay, which kept 98.8 % instead of 98.3 % of 500 PBC *val*
    #: images at the same local val-half accuracy (benchmarks/adapt/README.md, recipe development)
    min_steps: int = 160
    learning_rate: float = 1e-4           # phase 2 peak (Adam), after a linear warm-up
    warmup: float = 0.1                   # share of phase-2 steps spent warming up
    #: average the top's weights at the ends of the last half of phase 2's 10 chunks (SWA, as `train` does).
    #: On by default since 2026-12-03: on dev seeds it kept 0.15 pp more of 500 PBC val images at the same local
    #: val-half accuracy (the rule in benchmarks/adapt/dev/swa_rule.md, written before the screen)
    swa: bool = True
    batch_size: int = 32
    # -- replay of the source domain
    replay: bool = True
    replay_data: str | None = None        # default: config.data_root of the source run.json
    replay_split_manifest: str | None = None  # default: the source run's split.csv (its train split is used)
    replay_images: int = 400              # stratified sample of the replay train split
    replay_views: int = 1                 # augmented views per replay image (+ the clean one)
    replay_share: float = 0.5             # share of each batch (and of the head's loss) from replay
    #: what the replay images are trained towards: "labels" (their classes) or "distill" (the source model's own
    #: probabilities on them - keeps its behaviour on the source domain, not only its labels)
    replay_targets: str = "distill"
    # -- weight interpolation back towards the source (WiSE-FT, `interpolate`), chosen on source val images.
    #    Off by default: on Tecom / CellaVision it kept PBC within 0.2 pp but cost the new lab 1-5 pp
    #    (benchmarks/adapt/README.md) - a lab that must not lose the source domain turns it on.
    interpolate: bool = False
    alphas: tuple = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)   # tried from 1 (the adapted model) down; the first safe wins
    max_source_drop: float = 0.002        # accuracy the source val images may lose against the source model
    source_check_images: int = 500        # stratified sample of the source run's val split

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> AdaptConfig:
        if self.per_class is not None and self.per_class < 1:
            raise WbcEdgeError(f"--per-class must be >= 1, got {self.per_class}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise WbcEdgeError(f"--holdout must be in (0, 1), got {self.holdout_fraction}")
        if self.min_holdout < 0:
            raise WbcEdgeError(f"--min-holdout must be >= 0, got {self.min_holdout}")
        if not 0.0 <= self.val_share < 1.0:
            raise WbcEdgeError(f"--val-share must be in [0, 1), got {self.val_share}")
        if not 0.0 < self.replay_share < 1.0:
            raise WbcEdgeError(f"--replay-share must be in (0, 1), got {self.replay_share}")
        if not 1 <= self.adapt_from <= 16:
            raise WbcEdgeError(f"--adapt-from must be a MobileNetV2 block 1-16, got {self.adapt_from}")
        for name in ("aug_views", "head_epochs", "min_steps", "replay_views"):
            if getattr(self, name) < 0:
                raise WbcEdgeError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.replay_images < 0:
            raise WbcEdgeError(f"--replay-images must be >= 0, got {self.replay_images}")
        if self.replay_targets not in ("labels", "distill"):
            raise WbcEdgeError(f"replay_targets must be 'labels' or 'distill', got {self.replay_targets!r}")
        if not 0.0 <= self.max_source_drop < 1.0:
            raise WbcEdgeError(f"--max-source-drop must be in [0, 1), got {self.max_source_drop}")
        if not self.alphas or any(not 0.0 <= float(a) <= 1.0 for a in self.alphas):
            raise WbcEdgeError(f"interpolation alphas must be in [0, 1], got {list(self.alphas)}")
        if self.source_check_images < 0:
            raise WbcEdgeError(f"--source-check-images must be >= 0, got {self.source_check_images}")
        if self.batch_size < 2:
            raise WbcEdgeError(f"--batch-size must be >= 2, got {self.batch_size}")
        self.augment.validate()
        return self


@dataclass
class AdaptResult:
    """What `adapt` returns: where the run went, the held-out scores (as in run.json) and the phase times."""

    run_dir: Path
    model_path: Path
    heldout: dict
    timings: dict
