"""`wbc-edge` command line: a thin click layer over the library API.

Each command group lives in its own module here and only imports the heavy library code (TensorFlow)
inside the command body, so `wbc-edge --help` and `wbc-edge predict` start fast.

Exit codes: 0 ok; 1 a failure with a one-line message (no traceback unless --debug); 2 usage errors
(click's own: wrong flags, missing paths); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
import traceback

import click

from .. import __version__
from ..errors import WbcEdgeError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("\nInterrupted: nothing was half-written (artifacts are written atomically).", err=True)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the CLI boundary: everything becomes a one-line message
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            if isinstance(exc, WbcEdgeError):
                click.echo(f"Error: {_one_line(str(exc))}", err=True)
            elif isinstance(exc, OSError) and exc.errno is not None:
                # The machine, not the input or a bug: disk full, permission denied, read-only file system.
                where = f"{exc.filename}: " if exc.filename else ""
                click.echo(f"Error: {where}{exc.strerror or _one_line(str(exc))}", err=True)
            else:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                click.echo(f"Error: unexpected {type(exc).__name__}: {first} (run with --debug for the traceback)",
                           err=True)
            sys.exit(1)


def _one_line(text: str) -> str:
    """Messages are one line by contract; a stray newline from a wrapped exception must not break that."""
    return " ".join(line.strip() for line in text.strip().splitlines())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wbc-edge")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """White-blood-cell classifier from training to the edge.

    \b
    Typical flow:
      wbc-edge data check DATA            # counts, bad files, duplicates
      wbc-edge train DATA --out runs/r1   # MobileNetV2, leak-free split
      wbc-edge evaluate runs/r1/model.keras DATA
      wbc-edge export runs/r1 --all       # float32/float16/dynamic/int8/QAT .tflite
      wbc-edge predict export/wbc_int8.tflite cell.jpg
      wbc-edge bench export/*.tflite --data samples/pbc_sample
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register() -> None:
    import importlib

    for mod_name, attr in (("data_cmd", "data"), ("train_cmd", "train"), ("train_cmd", "evaluate"),
                           ("export_cmd", "export"), ("predict_cmd", "predict"), ("bench_cmd", "bench")):
        try:
            mod = importlib.import_module(f"{__name__}.{mod_name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(mod_name):
                continue  # command module not written yet
            raise
        main.add_command(getattr(mod, attr))


_register()
