"""`wbc-edge predict MODEL IMAGE...`: classify images with a .tflite model through `wbc_edge.runtime`.

No TensorFlow anywhere on this path (numpy + Pillow + LiteRT), so it starts fast and runs on a Raspberry Pi.
"""

from __future__ import annotations

import json
import sys

import click


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--top-k", "top_k", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many of the most probable classes to show per image.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per image (JSON lines) instead of a table.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Interpreter threads (default: the runtime's default, 1 for LiteRT).")
@click.option("--labels", "labels_csv", default=None,
              help="Comma-separated class names in output order, for a model without embedded metadata "
                   "(for a model with metadata they must equal its embedded labels: never relabelled).")
@click.option("--no-xnnpack", is_flag=True, help="Use the reference kernels instead of the XNNPACK delegate.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=None,
              help="Flag predictions below this calibrated confidence as uncertain (default: the threshold "
                   "stored in the model, chosen on synthetic other-lab conditions; 0 for older models).")
@click.option("--no-scale-guard", is_flag=True,
              help="Feed every image as is. By default a cell far smaller in the frame than the training "
                   "cells (lower magnification) is magnified first, as the model's contract says; the "
                   "'zoom' column/field shows by how much.")
@click.pass_context
def predict(ctx: click.Context, model: str, images: tuple[str, ...], top_k: int, as_json: bool,
            threads: int | None, labels_csv: str | None, no_xnnpack: bool, min_confidence: float | None,
            no_scale_guard: bool) -> None:
    """Classify IMAGE files (folders: every image inside, recursively) with a .tflite MODEL.

    \b
    Prints a table (file, label, confidence, top-k) or, with --json, JSON lines.  Confidence is calibrated
    when the model carries a temperature; below the abstain threshold the row is marked "uncertain"
    ("uncertain": true in JSON) - check such cells by eye.  An image that cannot be read is reported on
    stderr and skipped; the exit status is then 1.
    """
    from ..errors import BadImageError
    from ..runtime import IMAGE_SUFFIXES, Classifier, find_images

    labels = None
    if labels_csv is not None:
        labels = [x.strip() for x in labels_csv.split(",")]
        if not all(labels):
            raise click.BadParameter("empty label in the list", param_hint="--labels")

    files = find_images(images)
    if not files:
        raise click.UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(images)}")

    clf = Classifier(model, num_threads=threads, labels=labels, use_xnnpack=not no_xnnpack,
                     min_confidence=min_confidence, scale_guard=not no_scale_guard)
    k = min(top_k, len(clf.labels))
    names = [str(f) for f in files]
    width = min(max(len("file"), *(len(n) for n in names)), 60)
    label_w = max(len("label"), *(len(x) for x in clf.labels))
    if not as_json:
        click.echo(f"# {clf.describe()}")
        if clf.temperature != 1.0 or clf.abstain_threshold > 0:
            click.echo(f"# calibrated confidence (temperature {clf.temperature:.3g}); uncertain below "
                       f"{clf.abstain_threshold:.1%}")
        if clf.scale_guard is not None:
            g = clf.scale_guard
            click.echo(f"# scale guard: cells whose nucleus is under {g.threshold:.1%} of the side are magnified "
                       f"(up to {g.max_zoom:g}x); zoom column")
        click.echo(f"{'file':<{width}}  {'label':<{label_w}}  {'conf':>6}  {'':<9}  {'zoom':>5}  top-{k}")

    failed = 0
    for name, f in zip(names, files):  # noqa: B905 - same length by construction; runs on Python 3.9
        try:
            pred = clf.predict(f)
        except BadImageError as exc:
            failed += 1
            click.echo(f"Error: {exc}", err=True)
            continue
        if as_json:
            rec = {"file": name, **pred.to_dict(k)}
            click.echo(json.dumps(rec))
        else:
            tops = ", ".join(f"{lab} {p:.3f}" for lab, p in pred.top_k(k))
            flag = "uncertain" if pred.uncertain else ""
            zoom = f"{pred.zoom:.2f}x" if pred.zoom != 1.0 else "-"
            click.echo(f"{name:<{width}}  {pred.label:<{label_w}}  {pred.confidence:>6.1%}  {flag:<9}  {zoom:>5}  "
                       f"{tops}")
        sys.stdout.flush()

    if failed:
        click.echo(f"Error: {failed} of {len(files)} image(s) could not be classified (see above)", err=True)
        ctx.exit(1)
