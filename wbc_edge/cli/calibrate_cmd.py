"""`wbc-edge calibrate RUN_DIR`: fit the confidence calibration of a run trained before it existed."""

from __future__ import annotations

import click


@click.command("calibrate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False), default=None,
              help="ImageFolder root of the run's split (default: data_root in run.json).")
@click.option("--quiet", is_flag=True)
def calibrate(run_dir, data_root, quiet):
    """Fit temperature scaling on RUN_DIR's val split and the abstain threshold on its held-out shifted
    val; writes RUN_DIR/calibration.json, which `wbc-edge export` embeds in every variant.

    `wbc-edge train` already does this at the end of a run; use it for older runs.
    """
    from ..confidence import calibrate_run
    from .progress import ClickProgress

    cal = calibrate_run(run_dir, data_root, progress=ClickProgress(enabled=not quiet))
    click.echo(f"temperature {cal.temperature:.3f} (val ECE {cal.ece_before:.3f} -> {cal.ece_after:.3f}); "
               f"abstain below {cal.abstain_threshold:.3f} (calibrated confidence); wrote {run_dir}/calibration.json")
