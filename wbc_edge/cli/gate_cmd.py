"""`wbc-edge export-gate RUN_DIR --out DIR`: the unfamiliar-lab gate as a file for the device (TF inside only)."""

from __future__ import annotations

import click


@click.command("export-gate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for wbc_gate.tflite and wbc_gate.json (e.g. export/gate/: a folder of its own, so that "
                   "`bench export/*.tflite` and other globs over the classifier files do not pick the gate up).")
@click.option("--quiet", is_flag=True)
def export_gate(run_dir: str, out_dir: str, quiet: bool) -> None:
    """Write the unfamiliar-lab gate of RUN_DIR (its model.keras and feature_distance.npz) as a float16 .tflite.

    \b
    The gate gives each image its distance to the training labs in the model's own features.  `wbc-edge predict
    --gate DIR/wbc_gate.tflite` flags single images beyond the cut ("far") and, for 20 or more cells, says when
    the whole batch comes from a lab the model has not seen (thresholds in wbc_gate.json; the batch one is
    fitted on the run's val split: benchmarks/gate/RULE.md).
    """
    from ..export.gate import export_gate as run
    from ..progress import Progress
    from .progress import ClickProgress

    run(run_dir, out_dir, progress=Progress.silent() if quiet else ClickProgress())
