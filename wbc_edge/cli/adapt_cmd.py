"""`wbc-edge adapt`: fine-tune a trained model on a few labelled images from a new lab (see wbc_edge.adapt).

The defaults are AdaptConfig's (one place for the recipe; the benchmark in benchmarks/adapt/ runs the same)."""

from __future__ import annotations

import click

from ..adapt.config import AdaptConfig
from ..data.augment import PRESETS, preset


@click.command("adapt")
@click.argument("source", type=click.Path(exists=True))
@click.argument("local_root", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="New run directory (model.keras, split.csv, run.json, calibration.json, test metrics): "
                   "evaluate, export and bench take it like a trained run.")
@click.option("--per-class", type=click.IntRange(min=1), default=AdaptConfig.per_class,
              help="Labelled images per class to adapt with; the rest are held out (default: hold out --holdout "
                   "of each class).")
@click.option("--holdout", "holdout_fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=AdaptConfig.holdout_fraction, show_default=True, help="Without --per-class: share of each class held out.")
@click.option("--min-holdout", type=click.IntRange(min=0), default=AdaptConfig.min_holdout, show_default=True,
              help="Held-out images per class at least (so the test split has every class you have).")
@click.option("--val-share", type=click.FloatRange(0, 1, max_open=True), default=AdaptConfig.val_share, show_default=True,
              help="Share of the held-out images used to fit the confidence calibration (val); the rest is test.")
@click.option("--seed", type=int, default=AdaptConfig.seed, show_default=True,
              help="Seeds the split, augmentation and training.")
@click.option("--aug-views", type=click.IntRange(0, 16), default=AdaptConfig.aug_views, show_default=True,
              help="Augmented views (robust preset) cached per adapt image.")
@click.option("--epochs", "finetune_epochs", type=click.FloatRange(min=0), default=AdaptConfig.finetune_epochs,
              show_default=True, help="Fine-tune passes over the local adapt images (at least --min-steps steps).")
@click.option("--min-steps", type=click.IntRange(min=0), default=AdaptConfig.min_steps, show_default=True,
              help="Fine-tune steps at least, however few the local images (small sets need the steps).")
@click.option("--lr", "learning_rate", type=click.FloatRange(min=0, min_open=True), default=AdaptConfig.learning_rate,
              show_default=True, help="Peak learning rate of the top-block fine-tune (after warm-up).")
@click.option("--augment", "aug_preset", type=click.Choice(list(PRESETS)), default=AdaptConfig.aug_preset,
              show_default=True, help="Augmentation of the cached views (wbc_edge.data.augment presets).  'scale' keeps "
                                      "your lab's colours; 'robust' also jitters stain and colour strongly.")
@click.option("--adapt-from", type=click.IntRange(1, 16), default=AdaptConfig.adapt_from, show_default=True,
              help="First MobileNetV2 block that is fine-tuned; lower also adapts the early blocks (colour, blur, "
                   "scale live there) at a few times the cost per step.")
@click.option("--swa/--no-swa", default=AdaptConfig.swa, show_default=True,
              help="Average the top's weights over the low-rate half of the fine-tune (weight averaging, as "
                   "`train` does).")
@click.option("--head-epochs", type=click.IntRange(min=0), default=AdaptConfig.head_epochs, show_default=True,
              help="Epochs of a head re-fit on pooled features before the fine-tune (for a new head; costs "
                   "more source-domain accuracy).")
@click.option("--replay-data", type=click.Path(exists=True, file_okay=False), default=AdaptConfig.replay_data,
              help="Source-domain ImageFolder mixed into every batch so it is not forgotten (default: the "
                   "source run's data root).")
@click.option("--replay-split-manifest", type=click.Path(exists=True, dir_okay=False),
              default=AdaptConfig.replay_split_manifest,
              help="Split CSV of --replay-data; its train split is sampled (default: the source run's split.csv).")
@click.option("--replay-images", type=click.IntRange(min=0), default=AdaptConfig.replay_images, show_default=True,
              help="Source images replayed (stratified sample); 0 = no replay.")
@click.option("--no-replay", is_flag=True, help="Adapt on the local images only (the source domain may be forgotten).")
@click.option("--keep-source", is_flag=True,
              help="Mix the adapted weights back towards the source model (WiSE-FT) as far as needed to keep its "
                   "accuracy on the source run's val images within --max-source-drop.  Costs the new lab some "
                   "accuracy (1-5 pp in benchmarks/adapt/); for a lab that also needs the source domain.")
@click.option("--max-source-drop", type=click.FloatRange(0, 1, max_open=True), default=AdaptConfig.max_source_drop,
              show_default=True, help="With --keep-source: source val accuracy the model may lose (0.002 = 0.2 pp).")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable local files instead of refusing the folder.")
@click.option("--force", is_flag=True, help="Replace an existing --out directory.")
@click.option("--quiet", is_flag=True, help="Only errors.")
def adapt(source, local_root, out_dir, per_class, holdout_fraction, min_holdout, val_share, seed, aug_views,
          finetune_epochs, min_steps, learning_rate, aug_preset, adapt_from, swa, head_epochs, replay_data,
          replay_split_manifest, replay_images, no_replay, keep_source, max_source_drop, skip_bad, force, quiet):
    """Adapt SOURCE (a run directory or a .keras model) to the labelled images in LOCAL_ROOT
    (LOCAL_ROOT/<class>/<image>, 5-50 per class; a class may be missing; class folders must be
    classes of SOURCE).

    \b
      wbc-edge data check my_lab/                      # counts, bad files, duplicates
      wbc-edge adapt runs/r1 my_lab/ --out runs/my_lab  # split shown; ~minutes on 2 cores
      wbc-edge export runs/my_lab --int8               # calibrated on my_lab's adapt images
    """
    from ..adapt import adapt as run_adapt
    from .progress import ClickProgress

    cfg = AdaptConfig(source=str(source), data_root=str(local_root), out_dir=str(out_dir), per_class=per_class,
                      holdout_fraction=holdout_fraction, min_holdout=min_holdout, val_share=val_share, seed=seed,
                      skip_bad=skip_bad, aug_views=aug_views, finetune_epochs=finetune_epochs, min_steps=min_steps,
                      learning_rate=learning_rate, aug_preset=aug_preset, swa=swa,
                      augment=preset(aug_preset), adapt_from=adapt_from, head_epochs=head_epochs, replay=not no_replay,
                      replay_data=replay_data, replay_split_manifest=replay_split_manifest,
                      replay_images=replay_images, interpolate=keep_source,
                      max_source_drop=max_source_drop)
    run_adapt(cfg, force=force, progress=ClickProgress(enabled=not quiet))
