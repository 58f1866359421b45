"""`wbc-edge train` and `wbc-edge evaluate` (TensorFlow imported only inside the commands)."""

from __future__ import annotations

import click

_DATA = click.Path(exists=True, file_okay=False)
_POSITIVE = click.FloatRange(min=0, min_open=True)


@click.command()
@click.argument("data", type=_DATA)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: model.keras, split.csv, history.json, curves.png, run.json, metrics.")
@click.option("--mode", type=click.Choice(["cached", "full"]), default="cached", show_default=True,
              help="cached: CPU-practical (cache frozen-backbone activations, train head, fine-tune top blocks). "
                   "full: end-to-end fine-tuning for GPU machines / tf.distribute.")
@click.option("--weights", default="imagenet", show_default=True,
              help="Backbone init: imagenet (Keras download) | none | PATH to a no-top .h5 "
                   "(offline: ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5).")
@click.option("--alpha", type=_POSITIVE, default=1.0, show_default=True, help="MobileNetV2 width multiplier.")
@click.option("--input-size", type=click.IntRange(min=32), default=224, show_default=True, help="Square input size in pixels.")
@click.option("--split-manifest", type=click.Path(exists=True, dir_okay=False),
              help="Reuse a saved split CSV instead of computing one.")
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True, help="Full mode: end-to-end epochs (paper: 15).")
@click.option("--head-epochs", type=click.IntRange(min=0), default=15, show_default=True, help="Cached mode: head epochs (paper: 15).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=8, show_default=True, help="Cached mode: top-block epochs.")
@click.option("--finetune-from", type=click.IntRange(13, 16), default=13, show_default=True,
              help="Cached mode: first MobileNetV2 block that is fine-tuned.")
@click.option("--aug-views", type=click.IntRange(0, 16), default=4, show_default=True,
              help="Cached mode: augmented views cached per training image (each costs one pass of the "
                   "frozen backbone over the train split).")
@click.option("--augment", "aug_preset", type=click.Choice(["robust", "basic", "colour", "scale", "none"]),
              default="robust", show_default=True,
              help="Augmentation recipe. robust: zoom 0.8-2.8x + blur/low-res/JPEG/noise + stain (HED), hue, "
                   "white-balance, grey; basic: the original dihedral + mild colour; colour / scale: one family "
                   "each (for ablations). See `wbc-edge data preview-aug`.")
@click.option("--finetune-warmup", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Cached mode: epochs of linear learning-rate warm-up before the cosine decay.")
@click.option("--no-swa", is_flag=True, help="Cached mode: do not average the weights of the second half's epochs.")
@click.option("--no-shifted-val", is_flag=True,
              help="Select the model on clean val accuracy only (default: the mean of clean val accuracy and "
                   "balanced accuracy on a fixed held-out 'shifted val' - tight crops, other cameras' colours).")
@click.option("--shared-cache", type=click.Path(file_okay=False), default=None,
              help="Cached mode: share the seed-independent activations (clean views, shifted val) between "
                   "runs in this folder - several seeds or recipes then pay for them once.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--lr", "learning_rate", type=_POSITIVE, default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--finetune-lr", type=_POSITIVE, default=1e-4, show_default=True)
@click.option("--early-stopping", type=click.IntRange(min=1), default=None, help="Patience (epochs without val improvement).")
@click.option("--no-class-weights", is_flag=True, help="Do not weight the loss against class imbalance.")
@click.option("--limit-per-class", type=click.IntRange(min=1), default=None, help="Quick runs: cap images per class and split.")
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multiworker"]), default="none",
              show_default=True, help="Full mode: tf.distribute strategy (multiworker reads TF_CONFIG).")
@click.option("--force", is_flag=True, help="Overwrite a finished run / restart an unfinished one.")
@click.option("--quiet", is_flag=True)
def train(data, out_dir, mode, weights, alpha, input_size, split_manifest, seed, epochs, head_epochs,
          finetune_epochs, finetune_from, aug_views, aug_preset, finetune_warmup, no_swa, no_shifted_val, shared_cache, batch_size, learning_rate, finetune_lr, early_stopping,
          no_class_weights, limit_per_class, distribute, force, quiet):
    """Train MobileNetV2 on an ImageFolder DATA (root/<class>/<image>) with a leak-free split.

    Re-running the same command on an interrupted RUN_DIR resumes it.
    """
    from ..augment import preset
    from ..model import ModelConfig
    from ..train import TrainConfig, train as run_train

    cfg = TrainConfig(data_root=str(data), out_dir=str(out_dir), mode=mode,
                      model=ModelConfig(alpha=alpha, input_size=input_size, weights=weights),
                      split_manifest=split_manifest, seed=seed, epochs=epochs, head_epochs=head_epochs,
                      finetune_epochs=finetune_epochs, finetune_from=finetune_from, aug_views=aug_views,
                      aug_preset=aug_preset, augment=preset(aug_preset), finetune_warmup=finetune_warmup,
                      swa=not no_swa, shifted_val=not no_shifted_val, shared_cache=shared_cache,
                      batch_size=batch_size, learning_rate=learning_rate, finetune_learning_rate=finetune_lr,
                      early_stopping=early_stopping, class_weights=not no_class_weights,
                      limit_per_class=limit_per_class, distribute=distribute)
    run_train(cfg, force=force, verbose=not quiet)


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", type=_DATA)
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True,
              help="Which part of the split manifest to score; 'all' scores every valid image of DATA "
                   "(e.g. a cross-domain set).")
@click.option("--split-manifest", type=click.Path(exists=True, dir_okay=False),
              help="Split CSV (default: split.csv beside MODEL).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Where metrics.json / confusion.json / confusion.png go "
                   "(default: eval_<DATA folder name>_<split>/ in MODEL's folder).")
@click.option("--quiet", is_flag=True)
def evaluate(model, data, split, split_manifest, out_dir, quiet):
    """Score a Keras MODEL (.keras) on DATA: accuracy (95 % bootstrap CI), balanced accuracy, macro-F1,
    per-class precision/recall/F1, confusion matrix (JSON + PNG)."""
    from ..evaluate_model import evaluate_keras

    metrics, saved = evaluate_keras(model, data, split=split, split_manifest=split_manifest, out_dir=out_dir,
                                    progress=not quiet)
    click.echo(metrics.format_table())
    click.echo("Saved: " + ", ".join(str(p) for p in saved.values()))
