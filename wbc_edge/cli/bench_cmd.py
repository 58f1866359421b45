"""`wbc-edge bench`: parity + latency of exported variants on this device, and `bench merge` across devices.

    wbc-edge bench MODELS... --data ROOT [options]      (the default subcommand, `run`)
    wbc-edge bench merge RESULTS.json... [--markdown OUT]

No TensorFlow on the `run` path unless the reference is a .keras file (then only in worker processes), and
no matplotlib unless --plot is given (skipped with a message when it is not installed).
"""

from __future__ import annotations

import click

from ..bench.config import CLIENTS, SPLITS, BenchConfig


class _DefaultRunGroup(click.Group):
    """A group whose first argument selects `merge` (or `run`); anything else is `run`'s arguments."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group("bench", cls=_DefaultRunGroup)
def bench() -> None:
    """Check each variant's accuracy against the reference and time it on this device.

    \b
      wbc-edge bench export/*.tflite --data samples/pbc_sample          # = bench run ...
      wbc-edge bench export/*.tflite --reference runs/r1/model.keras --data PBC \\
          --split-manifest runs/r1/split.csv --threads 1,2,4 --json out.json --markdown out.md
      wbc-edge bench merge x86.json pi4.json android.json --markdown all.md
      wbc-edge bench export/*.tflite --data samples/pbc_sample --client mediapipe --runs 5

    See `wbc-edge bench run --help` for every option.
    """


def _parse_threads(ctx, param, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in str(value).split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}") from None
    if not out or any(t < 1 for t in out):
        raise click.BadParameter(f"expected comma-separated positive integers, got {value!r}")
    return out


@bench.command("run")
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--data", "data", required=True, type=click.Path(exists=True, file_okay=False),
              help="ImageFolder root (with --split-manifest: the root its paths are relative to).")
@click.option("--reference", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Reference model: .keras (timed in a subprocess) or .tflite. Default: the float32 .tflite "
                   "among MODELS (its Keras parity comes from the export's manifest.json beside it).")
@click.option("--split-manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Split CSV; without it every valid image under --data is used.")
@click.option("--split", type=click.Choice(SPLITS), default=BenchConfig.split, show_default=True)
@click.option("--limit", type=click.IntRange(min=1), default=BenchConfig.limit,
              help="At most this many images (class-balanced, deterministic).")
@click.option("--threads", "threads", default=",".join(map(str, BenchConfig.threads)), show_default=True,
              callback=_parse_threads,
              help="Thread counts to time, comma-separated (e.g. 1,2,4).")
@click.option("--runs", type=click.IntRange(min=1), default=BenchConfig.runs, show_default=True,
              help="Timed single-image calls.")
@click.option("--warmup", type=click.IntRange(min=0), default=BenchConfig.warmup, show_default=True,
              help="Untimed calls first.")
@click.option("--batch-throughput-images", type=click.IntRange(min=0), default=BenchConfig.batch_throughput_images,
              show_default=True,
              help="Images for the sequential throughput (img/s) measurement; 0 skips it.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the full JSON result.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Write the Markdown report.")
@click.option("--plot", "plot_out", type=click.Path(dir_okay=False), default=None,
              help="Write accuracy vs latency PNG (needs matplotlib; skipped with a message without it).")
@click.option("--max-accuracy-drop", type=float, default=BenchConfig.max_accuracy_drop,
              help="Gate: fail (exit 1) when a variant's accuracy is more than PP points below the "
                   "reference.")
@click.option("--min-agreement", type=float, default=BenchConfig.min_agreement,
              help="Gate: fail (exit 1) when a variant's top-1 agreement with the reference is below PCT %.")
@click.option("--no-xnnpack", is_flag=True, help="Time the builtin reference kernels instead of XNNPACK.")
@click.option("--ttfp/--no-ttfp", default=BenchConfig.ttfp,
              help="Time to first prediction in fresh processes (runtime vs Keras). Default: on when the "
                   "reference is a .keras.")
@click.option("--no-keras-timing", is_flag=True,
              help="With a .keras reference: compute its probabilities but do not time it.")
@click.option("--device-name", default=BenchConfig.device_name,
              help="Device label for `bench merge` tables (default: CPU model).")
@click.option("--domain", "domains", multiple=True, metavar="[NAME=]ROOT",
              help="Another lab's labelled ImageFolder: accuracy and agreement with the reference of every "
                   "variant on all its images (gated by --min-agreement too); repeatable.")
@click.option("--client", "clients", type=click.Choice(CLIENTS), multiple=True,
              help="Also run each .tflite through this client as an app would: 'mediapipe' = MediaPipe Tasks "
                   "ImageClassifier (needs mediapipe installed; its own venv, see README). Reports class-name "
                   "accuracy, top-1 agreement with the runtime and how its own resize differs.")
@click.option("--no-scale-guard", is_flag=True,
              help="Feed every image as preprocessed. By default the reference's scale guard magnifies cells far "
                   "smaller in the frame than the training cells, as the runtime does; its cost is reported.")
@click.pass_context
def run(ctx: click.Context, models, data, reference, split_manifest, split, limit, threads, runs, warmup,
        batch_throughput_images, json_out, md_out, plot_out, max_accuracy_drop, min_agreement, no_xnnpack,
        ttfp, no_keras_timing, device_name, domains, clients, no_scale_guard) -> None:
    """Parity with the reference + latency of MODELS (.tflite files, or export folders: every variant their
    manifest.json lists) on this device.

    \b
    Prints the Markdown table (Variant | Size MB | Acc | ΔAcc pp | Agree | p50 ms | p90 ms | img/s |
    threads); --json / --markdown / --plot write the full result.  Exit status 1 when a variant breaks
    --max-accuracy-drop or --min-agreement (the outputs are written first).
    """
    from ..bench import plot, run_bench, to_markdown, write_outputs
    from ..core.errors import WbcEdgeError
    from .progress import ClickProgress

    cfg = BenchConfig(models=list(models), data=data, reference=reference, split_manifest=split_manifest,
                      split=split, limit=limit, threads=threads, runs=runs, warmup=warmup,
                      batch_throughput_images=batch_throughput_images, max_accuracy_drop=max_accuracy_drop,
                      min_agreement=min_agreement, use_xnnpack=not no_xnnpack, ttfp=ttfp,
                      keras_timing=not no_keras_timing, device_name=device_name, clients=tuple(clients),
                      domains=tuple(domains), scale_guard=not no_scale_guard)
    result = run_bench(cfg, progress=ClickProgress())
    write_outputs(result, json_path=json_out, markdown_path=md_out)
    md = to_markdown(result)
    click.echo(md)
    for what, path in (("JSON", json_out), ("Markdown", md_out)):
        if path:
            click.echo(f"Wrote {what}: {path}", err=True)
    if plot_out:
        try:
            plot(result, plot_out)
            click.echo(f"Wrote plot: {plot_out}", err=True)
        except WbcEdgeError as exc:
            click.echo(f"Plot skipped: {exc}", err=True)
    gate = result["gate"]
    if not gate["passed"]:
        for f in gate["failures"]:
            click.echo(f"Gate FAILED: {f['variant']}: {f['reason']}", err=True)
        ctx.exit(1)


@bench.command("merge")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False), default=None,
              help="Write the table here.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the merged rows.")
def merge_cmd(results, md_out, json_out) -> None:
    """One table across devices from RESULTS.json files (ours, or converted from benchmark_model)."""
    from ..core.atomic import write_json, write_text
    from ..bench import merge, to_markdown

    merged = merge(list(results))
    md = to_markdown(merged)
    if md_out:
        write_text(md_out, md)
    if json_out:
        write_json(json_out, merged)
    click.echo(md)
