"""`wbc-edge predict MODEL IMAGE...`: classify images with a .tflite model through `wbc_edge.runtime`.

No TensorFlow anywhere on this path (numpy + Pillow + LiteRT), so it starts fast and runs on a Raspberry Pi.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
@click.option("--fallback", default="auto", show_default=True, metavar="auto|none|FLOAT.tflite",
              help="The cascade: an image whose calibrated top-1 minus top-2 from a quantised MODEL is below "
                   "--fallback-margin is run again in this float file and its answer is shown ('fallback' "
                   "column/field). auto: the float16 (else float32) file of the same model beside MODEL, if "
                   "any; none: off.")
@click.option("--fallback-margin", type=click.FloatRange(0, 1), default=None,
              help="Re-run below this margin (default: the runtime's, chosen on PBC val and shifted val; see "
                   "benchmarks/cascade/).")
@click.option("--gate", "gate_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The unfamiliar-lab gate (wbc_gate.tflite from `wbc-edge export-gate`): a 'far' flag per image "
                   "(beyond 95 % of the training lab's own val images) and, for 20 or more images, whether the "
                   "batch as a whole comes from a lab the model has not seen.")
@click.pass_context
def predict(ctx: click.Context, model: str, images: tuple[str, ...], top_k: int, as_json: bool,
            threads: int | None, labels_csv: str | None, no_xnnpack: bool, min_confidence: float | None,
            no_scale_guard: bool, fallback: str, fallback_margin: float | None, gate_path: str | None) -> None:
    """Classify IMAGE files (folders: every image inside, recursively) with a .tflite MODEL.

    \b
    Prints a table (file, label, confidence, decision, top-k) or, with --json, JSON lines.  Confidence is
    calibrated when the model carries a temperature.  The decision is "accept" or why the answer should not be
    used: "uncertain" (below the abstain threshold; "uncertain": true in JSON) - check such cells by eye; with
    --gate also "unfamiliar-lab" (20 or more images that as a batch are unlike the training labs: every answer
    refused until the lab is checked and adapted) and "far" (a cell unlike the training labs, when the batch is
    too small to judge).  An image that cannot be read is reported on stderr and skipped; the exit status is
    then 1.
    """
    from ..core.errors import BadImageError
    from ..runtime import IMAGE_SUFFIXES, Classifier, find_images
    from ..runtime.gate import ACCEPT, decide

    labels = None
    if labels_csv is not None:
        labels = [x.strip() for x in labels_csv.split(",")]
        if not all(labels):
            raise click.BadParameter("empty label in the list", param_hint="--labels")

    files = find_images(images)
    if not files:
        raise click.UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(images)}")

    clf = Classifier(model, num_threads=threads, labels=labels, use_xnnpack=not no_xnnpack,
                     min_confidence=min_confidence, scale_guard=not no_scale_guard,
                     fallback=_fallback_file(fallback, model), fallback_margin=fallback_margin)
    gate = None
    if gate_path is not None:
        from ..runtime.gate import LabGate

        gate = LabGate(gate_path, num_threads=threads)
        if gate.input_size != clf.input_size:
            raise click.BadParameter(f"{gate_path}: takes {gate.input_size} px images, {model} {clf.input_size} px",
                                     param_hint="--gate")
    k = min(top_k, len(clf.labels))
    names = [str(f) for f in files]
    width = min(max(len("file"), *(len(n) for n in names)), 60)
    label_w = max(len("label"), *(len(x) for x in clf.labels))
    if not as_json:
        _print_header(clf, model, fallback, gate, width, label_w, k)

    def emit(name, pred, far, distance, decision):
        if as_json:
            rec = {"file": name, **pred.to_dict(k), "decision": decision}
            if gate is not None:
                rec.update(far_from_training=far, distance=round(distance, 3))
            click.echo(json.dumps(rec))
        else:
            tops = ", ".join(f"{lab} {p:.3f}" for lab, p in pred.top_k(k))
            flag = "" if decision == ACCEPT else decision
            zoom = f"{pred.zoom:.2f}x" if pred.zoom != 1.0 else "-"
            fb_col = "" if clf.fallback is None else f"{'yes' if pred.fallback else '-':<8}"
            gate_col = "" if gate is None else f"{'far' if far else '-':<4}"
            click.echo(f"{name:<{width}}  {pred.label:<{label_w}}  {pred.confidence:>6.1%}  {flag:<14}  {zoom:>5}  "
                       f"{fb_col}  {gate_col}  {tops}")
        sys.stdout.flush()

    failed, held = 0, []
    for name, f in zip(names, files):  # noqa: B905 - same length by construction; runs on Python 3.9
        try:
            pixels, zoom = clf.prepare(f)
        except BadImageError as exc:
            failed += 1
            click.echo(f"Error: {exc}", err=True)
            continue
        pred = clf.prediction(clf.predict_pixels(pixels[None])[0], zoom, fallback=bool(clf.last_fallback[0]))
        if gate is None:
            emit(name, pred, None, None, decide(not pred.uncertain))
        else:  # the decision needs the whole batch's verdict: rows are printed once every image is in
            held.append((name, pred, float(gate.distances(pixels)[0])))

    if gate is not None and held:
        v = gate.batch([d for _, _, d in held])
        for name, pred, d in held:
            emit(name, pred, bool(gate.far([d])[0]), d, gate.decide(not pred.uncertain, d, v))
        click.echo(f"# gate: {_verdict_line(gate, v)}", err=as_json)
    if failed:
        click.echo(f"Error: {failed} of {len(files)} image(s) could not be classified (see above)", err=True)
        ctx.exit(1)


def _fallback_file(fallback: str, model: str) -> str | None:
    """--fallback: auto (the float file of the same model beside it, found by the contracts), none, or a path."""
    from ..runtime.cascade import float_companion

    if fallback == "auto":
        return float_companion(model)
    if fallback == "none":
        return None
    if not Path(fallback).is_file():
        raise click.BadParameter(f"{fallback}: not a file (a float .tflite, auto or none)", param_hint="--fallback")
    return fallback


def _print_header(clf, model: str, fallback: str, gate, width: int, label_w: int, k: int) -> None:
    """The table's comment lines (what the model is, how confidence and zoom are read) and its column names."""
    from ..runtime.cascade import is_quantised

    click.echo(f"# {clf.describe()}")
    if clf.temperature != 1.0 or clf.abstain_threshold > 0:
        click.echo(f"# calibrated confidence (temperature {clf.temperature:.3g}); uncertain below "
                   f"{clf.abstain_threshold:.1%}")
    if clf.scale_guard is not None:
        g = clf.scale_guard
        click.echo(f"# scale guard: cells whose nucleus is under {g.threshold:.1%} of the side are magnified "
                   f"(up to {g.max_zoom:g}x); zoom column")
    if clf.fallback is None and fallback == "auto" and is_quantised(model):
        click.echo("# no float file of this model beside it: no cascade (--fallback FLOAT.tflite to add one)")
    click.echo(f"{'file':<{width}}  {'label':<{label_w}}  {'conf':>6}  {'decision':<14}  {'zoom':>5}  "
               f"{'fallback' if clf.fallback is not None else ''}  {'gate' if gate else ''}  top-{k}")


def _verdict_line(gate, v) -> str:
    """The gate's batch verdict in words, printed after the rows."""
    if v.unfamiliar:
        return (f"UNFAMILIAR LAB: these {v.n} cells are unlike the training labs (median distance {v.median_ratio:.2f}x "
                f"the training val's, threshold {gate.batch_ratio:.2f}x; {v.far_share:.0%} far one by one): every "
                "answer refused; check them with `wbc-edge crossdomain`, then `wbc-edge adapt`")
    small = "" if v.n >= gate.batch_min else f", needs >= {gate.batch_min} cells: far cells refused one by one"
    return (f"batch of {v.n}: median distance {v.median_ratio:.2f}x the training val's (unfamiliar above "
            f"{gate.batch_ratio:.2f}x{small}); {v.far_share:.0%} far one by one")

