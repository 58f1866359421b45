"""`wbc-edge diagnose`: per-layer int8 error, the selective-float trade-off and the calibration check
(see wbc_edge.diagnose).  Defaults come from `DiagnoseConfig`."""

from __future__ import annotations

import click

from ..diagnose.config import ARMS, RANK_METRICS, DiagnoseConfig, config_field_default as _default


def _ints(ctx, param, value: str) -> tuple[int, ...]:
    try:
        ks = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 0,1,2,4,8") from None
    if not ks or min(ks) < 0:
        raise click.BadParameter(f"{value!r}: expected integers >= 0")
    return ks


def _arms(ctx, param, value: str) -> tuple[str, ...]:
    arms = tuple(a.strip() for a in value.split(",") if a.strip())
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise click.BadParameter(f"unknown arm(s) {', '.join(bad)} (known: {', '.join(ARMS)})")
    return arms


@click.command("diagnose")
@click.argument("source", type=click.Path(exists=True))
@click.option("--data", "datas", multiple=True, required=True,
              help="[NAME=]ROOT, once per domain.  The run's own data root means its split manifest's "
                   "--split split; any other root every valid image in it.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where report.md / report.json / layers.png / tradeoff.png go (default: "
                   "RUN_DIR/diagnose).")
@click.option("--data-root", type=click.Path(exists=True, file_okay=False), default=None,
              help="The ImageFolder the split manifest refers to (default: run.json's config.data_root).")
@click.option("--split-manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Split CSV (default: split.csv beside the model); calibration from its train split.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default=_default("split"),
              show_default=True, help="The split of the run's own data root that is evaluated.")
@click.option("--limit", type=click.IntRange(min=1), default=_default("limit"),
              help="At most this many images per domain (stratified, seeded); default all.")
@click.option("--k", "ks", default=",".join(str(k) for k in _default("ks")), show_default=True,
              callback=_ints, help="Numbers of worst layers kept float, one int8 model each (0 = full int8).")
@click.option("--layer-images", type=click.IntRange(min=1), default=_default("layer_images"),
              show_default=True, help="Images per domain for the per-layer error table (stratified).")
@click.option("--rank-images", type=click.IntRange(min=1), default=_default("rank_images"), show_default=True,
              help="Calibration images the layers are ranked on.")
@click.option("--rank-metric", type=click.Choice(RANK_METRICS), default=_default("rank_metric"),
              show_default=True)
@click.option("--arms", default=",".join(_default("arms")), show_default=True, callback=_arms,
              help="Calibration arms to compare: clean, augmented (export's), foreign (DIAGNOSTIC ONLY: adds "
                   "--foreign-images of each foreign domain to the calibration).")
@click.option("--foreign-images", type=click.IntRange(min=1), default=_default("foreign_images"),
              show_default=True, help="Images per foreign domain in the 'foreign' arm.")
@click.option("--calibration-size", type=click.IntRange(min=1), default=_default("calibration_size"),
              show_default=True, help="As export's.")
@click.option("--latency-runs", type=click.IntRange(min=1), default=_default("latency_runs"),
              show_default=True, help="Timed invokes per model (1 thread, median).")
@click.option("--max-latency-increase", type=click.FloatRange(min=0),
              default=_default("max_latency_increase_pct"), show_default=True,
              help="The recommended K stays within this many % over full int8's latency.")
@click.option("--threads", type=click.IntRange(min=1), default=_default("num_threads"),
              help="Interpreter threads for the agreement runs (default min(2, CPUs)).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=_default("cache_dir"),
              help="Keep preprocessed pixels here (.npz) and reuse them on the next run.")
def diagnose(source, datas, out_dir, data_root, split_manifest, split, limit, ks, layer_images, rank_images,
             rank_metric, arms, foreign_images, calibration_size, latency_runs, max_latency_increase, threads,
             cache_dir):
    """Where does int8 lose parity with float32 on SOURCE (RUN_DIR or MODEL.keras)?  Per-layer error per
    domain, the trade-off of keeping the K worst layers float, and the effect of the calibration set.

    \b
      wbc-edge diagnose runs/r1 --data pbc=../shared/data/pbc \\
          --data tecom=../shared/data/zheng2018_tecom --data cv=../shared/data/zheng2018_cellavision \\
          --out runs/r1/diagnose --cache /tmp/wbc_pixels
    """
    from ..diagnose import diagnose as run
    from .progress import ClickProgress

    cfg = DiagnoseConfig(source=source, data=tuple(datas), out_dir=out_dir, data_root=data_root,
                         split_manifest=split_manifest, split=split, limit=limit, ks=ks,
                         layer_images=layer_images, rank_images=rank_images, rank_metric=rank_metric,
                         arms=arms, foreign_images=foreign_images, calibration_size=calibration_size,
                         latency_runs=latency_runs, max_latency_increase_pct=max_latency_increase,
                         num_threads=threads, cache_dir=cache_dir)
    result = run(cfg, progress=ClickProgress())
    click.echo((result.out_dir / "report.md").read_text(encoding="utf-8"))
