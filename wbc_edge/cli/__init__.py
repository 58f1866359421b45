"""`wbc-edge` command line: a thin click layer over the library API.

Each command group lives in its own module here and only imports the heavy library code (TensorFlow)
inside the command body, so `wbc-edge --help` and `wbc-edge predict` start fast.

Exit codes: 0 ok; 1 a failure with a one-line message (no traceback unless --debug); 2 usage errors
(click's own: wrong flags, missing paths); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import os
import sys
import traceback

import click

from .. import __version__
from ..core.errors import WbcEdgeError, first_line
from ..core.quiet import DEBUG_ENV


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
                click.echo(f"Error: unexpected {type(exc).__name__}: {first_line(str(exc))} (run with --debug "
                           "for the traceback)", err=True)
            sys.exit(1)


def _one_line(text: str) -> str:
    """Messages are one line by contract; a stray newline from a wrapped exception must not break that."""
    return " ".join(line.strip() for line in text.strip().splitlines())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wbc-edge")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors, and TensorFlow's start-up log.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """White-blood-cell classifier from training to the edge.

    \b
    Typical flow:
      wbc-edge data check DATA            # counts, bad files, duplicates
      wbc-edge train DATA --out runs/r1   # MobileNetV2, leak-free split
      wbc-edge evaluate runs/r1/model.keras DATA
      wbc-edge adapt runs/r1 my_lab_images --out runs/my_lab   # a few labelled cells of a new lab
      wbc-edge export runs/r1 --all       # float32/float16/dynamic/int8/QAT .tflite
      wbc-edge metadata show export/wbc_int8.tflite   # standard TFLite metadata (MediaPipe)
      wbc-edge predict export/wbc_int8.tflite cell.jpg
      wbc-edge bench export/*.tflite --data samples/pbc_sample
      wbc-edge crossdomain export/*.tflite --data LAB=my_lab_images   # other labs' images
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if debug:  # TensorFlow's native start-up log too (wbc_edge.core.tfcompat keeps it quiet otherwise)
        os.environ[DEBUG_ENV] = "1"


# Imported after `main` exists; each module imports only click at module level (heavy imports are inside
# the command bodies), and a broken command module fails here, loudly.
from .adapt_cmd import adapt  # noqa: E402
from .bench_cmd import bench  # noqa: E402
from .calibrate_cmd import calibrate  # noqa: E402
from .crossdomain_cmd import crossdomain  # noqa: E402
from .data_cmd import data  # noqa: E402
from .diagnose_cmd import diagnose  # noqa: E402
from .evaluate_cmd import evaluate  # noqa: E402
from .export_cmd import export  # noqa: E402
from .gate_cmd import export_gate  # noqa: E402
from .metadata_cmd import metadata  # noqa: E402
from .predict_cmd import predict  # noqa: E402
from .train_cmd import train  # noqa: E402

for _command in (data, train, evaluate, calibrate, adapt, crossdomain, export, export_gate, diagnose, metadata, predict,
                 bench):
    main.add_command(_command)
