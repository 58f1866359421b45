"""`wbc-edge calibrate RUN_DIR`: fit the confidence calibration and the scale guard of a run trained before
they existed."""

from __future__ import annotations

import click


@click.command("calibrate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False), default=None,
              help="ImageFolder root of the run's split (default: data_root in run.json).")
@click.option("--scale-guard-only", is_flag=True,
              help="Only fit the scale guard (no TensorFlow, seconds); keep calibration.json as it is.")
@click.option("--feature-distance-only", is_flag=True,
              help="Only fit the feature distance (how far a domain's images lie from the training data, reported "
                   "by `wbc-edge crossdomain`); keep the other files as they are.")
@click.option("--quiet", is_flag=True)
def calibrate(run_dir, data_root, scale_guard_only, feature_distance_only, quiet):
    """Fit temperature scaling on RUN_DIR's val split and the abstain threshold on its held-out shifted
    val; writes RUN_DIR/calibration.json.  Also fits the scale guard on 1,000 train images (zoom in on cells
    far smaller than the training cells, see wbc_edge.core.scale_guard); writes RUN_DIR/scale_guard.json.
    `wbc-edge export` embeds both in every variant.  And fits the feature distance on 1,000 train + the val
    images (wbc_edge.calibrate.feature_distance); writes RUN_DIR/feature_distance.npz, which `wbc-edge crossdomain` reads
    to say how much of a domain lies far from the training data.

    `wbc-edge train` already does this at the end of a run; use it for older runs.
    """
    from ..calibrate.confidence import calibrate_run, feature_distance_run, scale_guard_run
    from .progress import ClickProgress

    if scale_guard_only and feature_distance_only:
        raise click.UsageError("--scale-guard-only and --feature-distance-only exclude each other")
    if not feature_distance_only:
        guard = scale_guard_run(run_dir, data_root)
        click.echo(f"scale guard: zoom in below nucleus fraction {guard.threshold:.3f} (to {guard.target:.3f}, "
                   f"at most {guard.max_zoom:g}x); wrote {run_dir}/scale_guard.json")
    if not scale_guard_only:
        fd = feature_distance_run(run_dir, data_root, progress=ClickProgress(enabled=not quiet))
        click.echo(f"feature distance: {100 * fd.quantile:.0f} % of val within {fd.cut:.1f}; "
                   f"wrote {run_dir}/feature_distance.npz")
    if scale_guard_only or feature_distance_only:
        return
    cal = calibrate_run(run_dir, data_root, progress=ClickProgress(enabled=not quiet))
    click.echo(f"temperature {cal.temperature:.3f} (val ECE {cal.ece_before:.3f} -> {cal.ece_after:.3f}); "
               f"abstain below {cal.abstain_threshold:.3f} (calibrated confidence); wrote {run_dir}/calibration.json")
