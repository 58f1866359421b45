"""`TrainConfig`: every option of a training run as one typed record, checked before anything is written.

Why one record: the whole recipe goes to RUN_DIR/config.json (compared on resume, so an interrupted run only
continues with the same options) and into run.json, and the CLI's defaults are read from it, so the library,
the CLI and the benchmarks run the same recipe.  `labels` is the one field the data decides: None on input
means "the class folders / split manifest say", and `train` records the list it found (it then also sizes the
model's head, `model.num_classes`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..data.augment import DEFAULT_PRESET, AugmentConfig, preset
from ..core.errors import WbcEdgeError
from ..model.network import LAST_BLOCKS, ModelConfig, resolve_weights

#: `mode`: cached = CPU-practical (activation cache, head, top blocks); full = end-to-end (GPU, tf.distribute).
MODES = ("cached", "full")
#: `distribute` (full mode): no strategy, MirroredStrategy on one machine, MultiWorkerMirroredStrategy.
DISTRIBUTE = ("none", "mirrored", "multiworker")
#: MobileNetV2 blocks the cached mode can cut at (`finetune_from`): the 14x14 and 7x7 stages.  Below block 7
#: the cached activation of every view grows to 28x28 or more (4x the memory and disk per view), and the
#: fine-tune would run most of the network per step, which is full mode's job.
FINETUNE_BLOCKS = tuple(range(7, 17))


@dataclass
class TrainConfig:
    data_root: str
    out_dir: str
    model: ModelConfig = field(default_factory=ModelConfig)
    mode: str = "cached"                  # cached | full
    split_manifest: str | None = None     # reuse a saved split instead of computing one
    seed: int = 42
    split_seed: int | None = None         # the split's seed when `train` computes it (None: `seed`); a fixed one
                                          # keeps the same test cells across training seeds
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    batch_size: int = 32
    epochs: int = 15                      # full mode: epochs of end-to-end training (paper: 15)
    learning_rate: float = 1e-3           # Adam, head phase / full mode
    head_epochs: int = 15                 # cached mode: head on frozen features (paper: 15 epochs, Adam)
    finetune_epochs: int = 8              # cached mode: top blocks on cached activations
    finetune_learning_rate: float = 1e-4  # peak of the warm-up + cosine schedule
    finetune_warmup: float = 1.0          # cached mode: epochs of linear learning-rate warm-up
    swa: bool = True                      # cached mode: also try the average of the second half's epochs
    finetune_from: int = 13               # first MobileNetV2 block that is fine-tuned (7 .. 16)
    aug_views: int = 4                    # cached mode: augmented views cached per train image
    feature_style: float = 0.0            # cached mode: share of fine-tune samples whose feature statistics
                                          # are jittered (augment.feature_style_jitter); 0 = off
    style_mix: float = 0.0                # cached mode, several labs: share of fine-tune samples whose feature
                                          # statistics are mixed with another lab's (augment.feature_style_mix)
    lab_batches: bool = False             # cached mode, several labs: fine-tune batches with an equal share of
                                          # each lab (weights then balance classes within each lab only)
    narrow_recalibrate: bool = False      # --narrow-from: re-estimate BatchNorm statistics on training views
    consistency: float = 0.0             # cached mode: weight of a Jensen-Shannon consistency term between each
                                          # image's clean view and one augmented view (AugMix); 0 = off
    aug_preset: str = DEFAULT_PRESET      # the named recipe `augment` was made from (for the record)
    augment: AugmentConfig = field(default_factory=lambda: preset(DEFAULT_PRESET))
    shifted_val: bool = True              # select the model on clean val + held-out shifted val
    shared_cache: str | None = None       # cached mode: folder where seed-independent activations (clean and
                                          # shifted-val views) are shared between runs (pretrained init only)
    class_weights: bool = True
    early_stopping: int | None = None     # patience in epochs (on val accuracy); None = off
    precise_bn: int = 512                 # full mode when BatchNorm trains (no ImageNet file): its statistics
                                          # re-estimated on this many augmented train views before each val
                                          # (model.batchnorm); 0 = Keras' moving averages
    limit_per_class: int | None = None    # quick runs: at most this many images per class and split
    distribute: str = "none"              # none | mirrored | multiworker (full mode)
    labels: list[str] | None = None       # the classes in output order; None = from the data (set by train)
    #: Several labelled labs (`wbc_edge.data.sources`): [{"name", "root"}].  None = one lab, `data_root`.  With
    #: sources, each lab is split on its own and `data_root` becomes RUN_DIR/sources (links to the labs).
    sources: list[dict] | None = None
    domain_balance: bool = True           # several sources: every lab weighs the same in the loss
    teacher: str | None = None            # distillation (train/distill.py): RUN_DIR or .keras of a trained model
    distill_alpha: float = 0.7            # weight of the teacher term (1 - alpha: the labels' cross-entropy)
    distill_temperature: float = 2.0      # softening of teacher and student outputs in the teacher term

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> TrainConfig:
        """Refuse a bad combination now, before RUN_DIR is created or the dataset scanned."""
        if self.mode not in MODES:
            raise WbcEdgeError(f"unknown training mode {self.mode!r} (expected 'cached' or 'full')")
        if self.distribute not in DISTRIBUTE:
            raise WbcEdgeError(f"unknown --distribute {self.distribute!r} ({' | '.join(DISTRIBUTE)})")
        if self.mode == "cached" and self.distribute != "none":
            raise WbcEdgeError("--distribute needs --mode full (cached mode is the single-CPU-machine path)")
        if self.finetune_from not in FINETUNE_BLOCKS:
            raise WbcEdgeError(f"--finetune-from must be a MobileNetV2 block {FINETUNE_BLOCKS[0]}..{FINETUNE_BLOCKS[-1]}, "
                                 f"got {self.finetune_from}")
        if self.model.last_block not in LAST_BLOCKS:
            raise WbcEdgeError(f"--last-block must be a MobileNetV2 block {LAST_BLOCKS[0]}..{LAST_BLOCKS[-1]}, got "
                               f"{self.model.last_block}")
        if self.mode == "cached" and self.finetune_from > self.model.last_block:
            raise WbcEdgeError(f"--finetune-from {self.finetune_from} is above --last-block {self.model.last_block}: "
                               "the cached mode's cut must be inside the network")
        if not 0.0 <= self.feature_style <= 1.0:
            raise WbcEdgeError(f"--feature-style must be a share in [0, 1], got {self.feature_style}")
        if not 0.0 <= self.style_mix <= 1.0:
            raise WbcEdgeError(f"--style-mix must be a share in [0, 1], got {self.style_mix}")
        if self.lab_batches and (self.mode != "cached" or self.sources is None or not self.domain_balance):
            raise WbcEdgeError("--lab-batches needs --mode cached, two or more DATA labs and domain balance (it "
                               "balances the labs by sampling instead of by weight)")
        if self.style_mix and (self.mode != "cached" or self.sources is None):
            raise WbcEdgeError("--style-mix needs --mode cached and two or more DATA labs (it mixes one lab's "
                               "feature statistics with another's)")
        if self.consistency < 0:
            raise WbcEdgeError(f"--consistency must be >= 0, got {self.consistency}")
        if self.consistency and (self.mode != "cached" or self.aug_views < 1):
            raise WbcEdgeError("--consistency needs --mode cached and --aug-views >= 1 (it compares each image's "
                               "clean view with an augmented one)")
        if self.sources is not None:
            if len(self.sources) < 2:
                raise WbcEdgeError("sources: give two or more labs (one lab is plain `data_root`)")
            if self.mode != "cached" and self.domain_balance:
                raise WbcEdgeError("several labs with domain balance need --mode cached (full mode weighs classes "
                                   "only); add --no-domain-balance to train full mode on several labs")
            if self.split_manifest:
                raise WbcEdgeError("several sources are split by `train` itself (each lab on its own); drop "
                                   "--split-manifest, or train on one lab with it")
        if self.teacher is not None:
            if self.mode != "cached":
                raise WbcEdgeError("--teacher needs --mode cached (the teacher's outputs are cached with the views)")
            if self.consistency:
                raise WbcEdgeError("--teacher and --consistency cannot be combined (both reshape the targets)")
            if not 0.0 <= self.distill_alpha <= 1.0 or self.distill_temperature <= 0:
                raise WbcEdgeError(f"--distill-alpha must be in [0, 1] and --distill-temperature > 0, got "
                                   f"{self.distill_alpha} and {self.distill_temperature}")
            from .distill import resolve_teacher

            resolve_teacher(self.teacher)  # a missing teacher fails before RUN_DIR is created
        if self.precise_bn < 0:
            raise WbcEdgeError(f"--precise-bn must be >= 0 (0: off), got {self.precise_bn}")
        if self.limit_per_class is not None and self.limit_per_class < 1:
            raise WbcEdgeError(f"--limit-per-class must be >= 1, got {self.limit_per_class}")
        resolve_weights(self.model.weights, self.model.alpha)  # a bad --weights value fails here
        if self.narrow_recalibrate and self.model.narrow_from is None:
            raise WbcEdgeError("--narrow-recalibrate needs --narrow-from (it re-estimates a narrowed network's "
                               "BatchNorm statistics)")
        if self.model.narrow_from is not None:
            from ..model.narrow import resolve_source

            resolve_source(self.model.narrow_from)  # before RUN_DIR is created
            if resolve_weights(self.model.weights, self.model.alpha) is not None:
                raise WbcEdgeError("--narrow-from replaces --weights: the narrowed network's channels are the "
                                   "start (use --weights none with it)")
        if self.distribute == "multiworker" and not self.split_manifest:
            raise WbcEdgeError("--distribute multiworker needs --split-manifest: every worker must train on the "
                               "same split (make it once with `wbc-edge data split`)")
        return self


@dataclass
class TrainResult:
    run_dir: Path
    model_path: Path
    test_accuracy: float
    history: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
