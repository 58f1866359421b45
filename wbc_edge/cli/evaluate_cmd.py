"""`wbc-edge evaluate`: score a Keras model on a split or a folder (TensorFlow imported only inside)."""

from __future__ import annotations

import click


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("data", type=click.Path(exists=True, file_okay=False))
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
    from ..core.progress import Progress
    from ..model.scoring import evaluate_keras
    from .progress import ClickProgress

    metrics, saved = evaluate_keras(model, data, split=split, split_manifest=split_manifest, out_dir=out_dir,
                                    progress=Progress.silent() if quiet else ClickProgress())
    click.echo(metrics.format_table())
    click.echo("Saved: " + ", ".join(str(p) for p in saved.values()))
