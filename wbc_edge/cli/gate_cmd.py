"""`wbc-edge export-gate RUN_DIR --out DIR`: the unfamiliar-lab gate as a file for the device (TF inside only)."""

from __future__ import annotations

import click


@click.command("export-gate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for wbc_gate.tflite and wbc_gate.json (e.g. export/gate/: a folder of its own, so that "
                   "`bench export/*.tflite` and other globs over the classifier files do not pick the gate up).")
@click.option("--android", "android_dir", type=click.Path(file_okay=False), default=None,
              help="Also put the gate (and LabGate.kt) into this Android bundle, written before by `wbc-edge export "
                   "... --android DIR` from the same run; its wbc_model.json and README.md gain the gate.")
@click.option("--quiet", is_flag=True)
def export_gate(run_dir: str, out_dir: str, android_dir: str | None, quiet: bool) -> None:
    """Write the unfamiliar-lab gate of RUN_DIR (its model.keras and feature_distance.npz) as a float16 .tflite.

    \b
    The gate gives each image its distance to the training labs in the model's own features.  `wbc-edge predict
    --gate DIR/wbc_gate.tflite` flags single images beyond the cut ("far") and, for 20 or more cells, says when
    the whole batch comes from a lab the model has not seen (thresholds in wbc_gate.json; the batch one is
    fitted on the run's val split: benchmarks/gate/RULE.md).
    """
    from ..export.gate import export_gate as run
    from ..core.progress import Progress
    from .progress import ClickProgress

    from pathlib import Path

    from ..export.android_gate import add_gate
    from ..export.gate import GATE_FILE

    if android_dir is not None and not (Path(android_dir) / "wbc_model.json").is_file():
        raise click.UsageError(f"--android {android_dir}: no wbc_model.json there (write the bundle with "
                               "`wbc-edge export RUN --android DIR` first)")
    run(run_dir, out_dir, progress=Progress.silent() if quiet else ClickProgress())
    if android_dir is not None:
        g = add_gate(android_dir, Path(out_dir) / GATE_FILE)
        if not quiet:
            click.echo(f"Android bundle {android_dir}: gate added ({g['bytes'] / 1e6:.2f} MB, LabGate.kt)")
