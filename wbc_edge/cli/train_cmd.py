"""`wbc-edge train` (TensorFlow imported only inside the command); `evaluate` is in evaluate_cmd.

Every default below is read from `TrainConfig` / `ModelConfig`, so the CLI, the library and the benchmarks
run one recipe.
"""

from __future__ import annotations

import click

from ..data.augment import PRESETS
from ..model.network import IMAGENET_WEIGHTS_FILE, LAST_BLOCKS, ModelConfig
from ..train.config import DISTRIBUTE, FINETUNE_BLOCKS, MODES, TrainConfig

_POSITIVE = click.FloatRange(min=0, min_open=True)


@click.command()
@click.argument("data", nargs=-1, required=True, metavar="[NAME=]DATA...")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: model.keras, split.csv, history.json, curves.png, run.json, metrics.")
@click.option("--mode", type=click.Choice(MODES), default=TrainConfig.mode, show_default=True,
              help="cached: CPU-practical (cache frozen-backbone activations, train head, fine-tune top blocks). "
                   "full: end-to-end fine-tuning for GPU machines / tf.distribute.")
@click.option("--weights", default=ModelConfig.weights, show_default=True,
              help="Backbone init: imagenet (Keras download) | none | PATH to a no-top .h5 "
                   f"(offline: a local copy of {IMAGENET_WEIGHTS_FILE}).")
@click.option("--narrow-from", "narrow_from", metavar="SOURCE",
              help="Start a narrower network (--alpha < 1) from a wider trained one: each layer keeps SOURCE's "
                   "channels with the largest BatchNorm scale.  SOURCE: RUN_DIR or .keras model (e.g. the "
                   "--teacher), or a MobileNetV2 1.0 no-top .h5.  For small widths whose ImageNet file you lack; "
                   "replaces --weights.")
@click.option("--narrow-recalibrate", is_flag=True,
              help="--narrow-from: re-estimate BatchNorm statistics on 512 augmented training views (off: "
                   "measured to hurt in cached mode, see benchmarks/small/README.md).")
@click.option("--alpha", type=_POSITIVE, default=ModelConfig.alpha, show_default=True,
              help="MobileNetV2 width multiplier.")
@click.option("--last-block", type=click.IntRange(LAST_BLOCKS[0], LAST_BLOCKS[-1]), default=ModelConfig.last_block,
              show_default=True,
              help="Keep MobileNetV2 up to this block and end it in a 1x1 convolution to 4x that block's channels "
                   "(16: the whole network). Most weights sit in the top blocks: 1.0 with --last-block 13 has "
                   "0.82 M parameters (int8 file < 1 MB) and keeps the ImageNet start.")
@click.option("--input-size", type=click.IntRange(min=32), default=ModelConfig.input_size, show_default=True,
              help="Square input size in pixels.")
@click.option("--split-manifest", type=click.Path(exists=True, dir_okay=False),
              help="Reuse a saved split CSV instead of computing one.")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
@click.option("--split-seed", type=int, default=None,
              help="Seed of the split `train` computes (default: --seed). Fix it to compare training seeds on the "
                   "same test cells; with several labs, 42 gives PBC the split of benchmarks/training/.")
@click.option("--epochs", type=click.IntRange(min=1), default=TrainConfig.epochs, show_default=True,
              help="Full mode: end-to-end epochs (paper: 15).")
@click.option("--head-epochs", type=click.IntRange(min=0), default=TrainConfig.head_epochs, show_default=True,
              help="Cached mode: head epochs (paper: 15).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=TrainConfig.finetune_epochs,
              show_default=True, help="Cached mode: top-block epochs.")
@click.option("--finetune-from", type=click.IntRange(min(FINETUNE_BLOCKS), max(FINETUNE_BLOCKS)),
              default=TrainConfig.finetune_from, show_default=True,
              help="Cached mode: first MobileNetV2 block that is fine-tuned (the cut of the activation cache). "
                   "Lower = more of the network learns from the augmented views, at about twice the "
                   "fine-tune time from block 7 as from block 13.")
@click.option("--aug-views", type=click.IntRange(0, 16), default=TrainConfig.aug_views, show_default=True,
              help="Cached mode: augmented views cached per training image (each costs one pass of the "
                   "frozen backbone over the train split).")
@click.option("--feature-style", type=click.FloatRange(0, 1), default=TrainConfig.feature_style, show_default=True,
              help="Cached mode: share of fine-tune samples whose per-channel feature statistics (mean, std at "
                   "the cache cut) are redrawn around their own values, a feature-level 'other lab' "
                   "augmentation (DSU). 0 = off (measured: no gain on other labs; benchmarks/robust/README.md).")
@click.option("--style-mix", type=click.FloatRange(0, 1), default=TrainConfig.style_mix, show_default=True,
              help="Cached mode, several DATA labs: share of fine-tune samples whose per-channel feature "
                   "statistics at the cache cut are blended with those of a sample from another lab (MixStyle "
                   "between labs; benchmarks/two_labs/SCREENS_RULE.md). 0 = off.")
@click.option("--lab-batches", is_flag=True, default=TrainConfig.lab_batches,
              help="Cached mode, several DATA labs: every fine-tune batch holds the same number of images from "
                   "each lab (a small lab's images recur within an epoch) and the loss weights balance classes "
                   "within each lab only (benchmarks/two_labs/SCREENS_RULE.md).")
@click.option("--consistency", type=click.FloatRange(0), default=TrainConfig.consistency, show_default=True,
              help="Cached mode: weight of a Jensen-Shannon consistency term that asks the top for the same answer "
                   "on each image's clean view and one augmented view (AugMix's; each fine-tune step then costs "
                   "twice as much). 0 = off.")
@click.option("--augment", "aug_preset", type=click.Choice(list(PRESETS)), default=TrainConfig.aug_preset,
              show_default=True,
              help="Augmentation recipe. robust (default): zoom 0.8-2.8x + blur/low-res/JPEG/noise + stain (HED), "
                   "hue, white-balance, grey; restain: robust + each dye's colour moved on its own (another lab's "
                   "stain; benchmarks/robust/README.md); randconv: robust + a random local convolution (texture); basic: the original dihedral + mild colour; colour / scale: one family "
                   "each (for ablations). See `wbc-edge data preview-aug`.")
@click.option("--zoom", "zoom_range", type=click.FloatRange(0, min_open=True), nargs=2, default=None,
              metavar="MIN MAX",
              help="Override the preset's zoom range (log-uniform; > 1 magnifies the cell, < 1 shrinks it), e.g. "
                   "--zoom 0.5 2.8 for labs whose cells are smaller in the frame than PBC's.")
@click.option("--finetune-warmup", type=click.FloatRange(min=0), default=TrainConfig.finetune_warmup,
              show_default=True, help="Cached mode: epochs of linear learning-rate warm-up before the cosine decay.")
@click.option("--no-swa", is_flag=True, help="Cached mode: do not average the weights of the second half's epochs.")
@click.option("--no-shifted-val", is_flag=True,
              help="Select the model on clean val accuracy only (default: the mean of clean val accuracy and "
                   "balanced accuracy on a fixed held-out 'shifted val' - tight crops, other cameras' colours).")
@click.option("--shared-cache", type=click.Path(file_okay=False), default=TrainConfig.shared_cache,
              help="Cached mode: share the seed-independent activations (clean views, shifted val) between "
                   "runs in this folder - several seeds or recipes then pay for them once.")
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size, show_default=True)
@click.option("--lr", "learning_rate", type=_POSITIVE, default=TrainConfig.learning_rate, show_default=True,
              help="Adam learning rate.")
@click.option("--finetune-lr", type=_POSITIVE, default=TrainConfig.finetune_learning_rate, show_default=True)
@click.option("--precise-bn", type=click.IntRange(min=0), default=TrainConfig.precise_bn, show_default=True,
              help="Full mode when BatchNorm trains (--weights none or --narrow-from): re-estimate its statistics on "
                   "this many augmented train views before each val, instead of trusting moving averages that "
                   "lag a network learning from scratch. 0: off.")
@click.option("--early-stopping", type=click.IntRange(min=1), default=TrainConfig.early_stopping,
              help="Patience (epochs without val improvement).")
@click.option("--no-class-weights", is_flag=True, help="Do not weight the loss against class imbalance.")
@click.option("--no-domain-balance", is_flag=True,
              help="Several DATA labs: weigh every image the same instead of every lab the same (by default "
                   "250 cells of a small lab weigh as much as 10,000 of a large one).")
@click.option("--limit-per-class", type=click.IntRange(min=1), default=TrainConfig.limit_per_class,
              help="Quick runs: cap images per class and split.")
@click.option("--distribute", type=click.Choice(DISTRIBUTE), default=TrainConfig.distribute,
              show_default=True, help="Full mode: tf.distribute strategy (multiworker reads TF_CONFIG).")
@click.option("--teacher", type=click.Path(exists=True), default=None,
              help="Distil from this trained model (RUN_DIR or .keras, e.g. export/reference): the student learns "
                   "from its softened outputs on the same augmented views as well as from the labels. Cached mode.")
@click.option("--distill-alpha", type=click.FloatRange(0, 1), default=TrainConfig.distill_alpha, show_default=True,
              help="--teacher: weight of the teacher term (the rest: the labels' cross-entropy).")
@click.option("--distill-temperature", type=click.FloatRange(0, min_open=True),
              default=TrainConfig.distill_temperature, show_default=True,
              help="--teacher: softening temperature of teacher and student outputs in the teacher term.")
@click.option("--force", is_flag=True, help="Overwrite a finished run / restart an unfinished one.")
@click.option("--quiet", is_flag=True)
def train(data, out_dir, mode, weights, narrow_from, narrow_recalibrate, alpha, last_block, input_size, split_manifest, seed, epochs, head_epochs,
          finetune_epochs, finetune_from, aug_views, feature_style, style_mix, lab_batches, consistency, aug_preset, zoom_range, finetune_warmup, no_swa, no_shifted_val,
          shared_cache, batch_size, learning_rate, finetune_lr, early_stopping, precise_bn, no_class_weights,
          limit_per_class, distribute, force, quiet, no_domain_balance, split_seed, teacher=None,
          distill_alpha=TrainConfig.distill_alpha, distill_temperature=TrainConfig.distill_temperature):
    """Train MobileNetV2 on an ImageFolder DATA (DATA/<class>/<image>) with a leak-free split.

    The classes are DATA's class folders (common spellings of the five WBC classes are merged), stored in
    RUN_DIR/run.json.  Re-running the same command on an interrupted RUN_DIR resumes it.

    \b
    Several labs: give several DATA folders, e.g.
      wbc-edge train pbc=../shared/data/pbc lisc=../shared/data/lisc --out runs/two_labs
    Each lab is split on its own (its duplicates and its manifest.csv `group` column kept together), the
    split manifest's paths start with the lab's name, run.json has per-lab val/test metrics, and every lab
    weighs the same in the loss (--no-domain-balance: every image).  The first lab's classes are the model's;
    another lab may lack one of them (said), not add one.
    """
    from ..data.augment import preset
    from ..train import train as run_train
    from .progress import ClickProgress

    from ..data import parse_sources
    from ..core.errors import WbcEdgeError

    try:
        sources = parse_sources(data)
    except WbcEdgeError as exc:  # a missing folder or a bad NAME= is a usage error (exit 2), as for one folder
        raise click.BadParameter(str(exc), param_hint="DATA") from None
    multi = [src.to_dict() for src in sources] if len(sources) > 1 else None
    cfg = TrainConfig(data_root=sources[0].root if not multi else "", out_dir=str(out_dir), mode=mode,
                      sources=multi, domain_balance=not no_domain_balance, split_seed=split_seed,
                      model=ModelConfig(alpha=alpha, input_size=input_size, last_block=last_block,
                                        weights="none" if narrow_from else weights, narrow_from=narrow_from),
                      split_manifest=split_manifest, seed=seed, epochs=epochs, head_epochs=head_epochs,
                      finetune_epochs=finetune_epochs, finetune_from=finetune_from, aug_views=aug_views,
                      feature_style=feature_style, style_mix=style_mix, lab_batches=lab_batches, consistency=consistency,
                      aug_preset=aug_preset, augment=preset(aug_preset, **_zoom(zoom_range)),
                      finetune_warmup=finetune_warmup,
                      swa=not no_swa, shifted_val=not no_shifted_val, shared_cache=shared_cache,
                      batch_size=batch_size, learning_rate=learning_rate, finetune_learning_rate=finetune_lr,
                      early_stopping=early_stopping, precise_bn=precise_bn, class_weights=not no_class_weights,
                      limit_per_class=limit_per_class, distribute=distribute, teacher=teacher,
                      narrow_recalibrate=narrow_recalibrate,
                      distill_alpha=distill_alpha, distill_temperature=distill_temperature)
    run_train(cfg, force=force, progress=ClickProgress(enabled=not quiet))


def _zoom(zoom_range) -> dict:
    """--zoom MIN MAX as AugmentConfig overrides (none when not given); MIN > MAX is the preset's one-line error."""
    return {} if not zoom_range else {"zoom_min": zoom_range[0], "zoom_max": zoom_range[1]}
