"""`wbc-edge crossdomain`: one table of how models do on several labs' images (see wbc_edge.bench.crossdomain)."""

from __future__ import annotations

from pathlib import Path

import click

from ..bench.crossdomain import CrossDomainConfig, Domain


def _domain_spec(value: str) -> tuple[str | None, str]:
    name, sep, root = value.partition("=")
    if not sep:
        name, root = None, value
    if not Path(root).is_dir():
        raise click.BadParameter(f"{root}: not a directory (expected an ImageFolder root, or NAME=ROOT)")
    return name, root


@click.command("crossdomain")
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "datas", multiple=True, required=True,
              help="A labelled ImageFolder root, or NAME=ROOT; once per domain.")
@click.option("--split-manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Score only a split of the FIRST --data (e.g. the run's split.csv -> its leak-free test "
                   "split); the other domains are scored in full.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default=Domain.split, show_default=True)
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Float reference for agreement (default: the .keras among MODELS, else the unquantised "
                   "(float32) .tflite).")
@click.option("--min-class-images", type=click.IntRange(min=1), default=CrossDomainConfig.min_class_images,
              show_default=True,
              help="Also give balanced accuracy over only the classes with at least this many images.")
@click.option("--min-agreement", type=click.FloatRange(0, 100), default=CrossDomainConfig.min_agreement,
              help="Gate: exit 1 when a .tflite agrees with the reference on less than PCT % of any domain.")
@click.option("--limit", type=click.IntRange(min=1), default=CrossDomainConfig.limit,
              help="At most this many images per domain (stratified, seeded).")
@click.option("--threads", type=click.IntRange(min=1), default=CrossDomainConfig.num_threads,
              help="Interpreter threads.")
@click.option("--no-scale-guard", is_flag=True,
              help="Feed every image as preprocessed. By default the reference's scale guard magnifies cells far "
                   "smaller in the frame than the training cells, for every model, as the runtime does.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write crossdomain.md, crossdomain.json and crossdomain.png here.")
@click.pass_context
def crossdomain(ctx, models, datas, split_manifest, split, reference, min_class_images, min_agreement, limit,
                threads, no_scale_guard, out_dir):
    """Score MODELS (.keras and/or .tflite) on several labelled domains: n, accuracy, balanced accuracy
    (also over classes with >= --min-class-images), macro-F1, per-class recall, and each .tflite's top-1
    agreement with the float reference, per domain (on all images, and on the images it accepts at
    its own stored threshold: the answers a user is not told are uncertain).  For a .keras model whose run directory holds
    feature_distance.npz (written by `wbc-edge train`, or `wbc-edge calibrate RUN --feature-distance-only`),
    also the share of each domain's images far from the training data: a lab whose images are mostly far
    should adapt the model (`wbc-edge adapt`) before trusting its answers or its confidence.

    \b
      wbc-edge crossdomain runs/r1/model.keras export/*.tflite \\
          --data PBC=../shared/data/pbc --split-manifest runs/r1/split.csv \\
          --data ../shared/data/zheng2018_tecom --data ../shared/data/zheng2018_cellavision --out report/
    """
    from ..core.atomic import write_json, write_text
    from ..bench.crossdomain import run_report, to_markdown
    from ..bench.crossdomain_plots import plot, plot_risk_coverage
    from ..core.errors import WbcEdgeError
    from .progress import ClickProgress

    domains = []
    for i, spec in enumerate(datas):
        name, root = _domain_spec(spec)
        domains.append(Domain(root=root, name=name, split_manifest=split_manifest if i == 0 else None,
                              split=split))
    cfg = CrossDomainConfig(models=list(models), domains=domains, reference=reference,
                            min_class_images=min_class_images, min_agreement=min_agreement, limit=limit,
                            num_threads=threads, scale_guard=not no_scale_guard)
    result = run_report(cfg, progress=ClickProgress())
    md = to_markdown(result)
    click.echo(md)
    if out_dir:
        out = Path(out_dir)
        write_json(out / "crossdomain.json", result)
        write_text(out / "crossdomain.md", md)
        written = [out / "crossdomain.md", out / "crossdomain.json"]
        try:
            written += [plot(result, out / "crossdomain.png"), plot_risk_coverage(result, out / "risk_coverage.png")]
        except WbcEdgeError as exc:  # e.g. the runtime-only install has no matplotlib: say so, claim nothing
            click.echo(f"Plots skipped: {exc}", err=True)
        click.echo("Wrote " + ", ".join(str(p) for p in written), err=True)
    if result["gate"] and not result["gate"]["passed"]:
        ctx.exit(1)
