"""The stages a variant goes through, so that a failure says where it happened.

A variant's export is: QAT fine-tune (QAT variants) -> conversion -> metadata (contract + standard TFLite
metadata) -> writing the file -> parity gate.  A failure in any of them fails that variant only; its
manifest entry records `stage` and a `reason` that starts with the stage ("QAT fine-tune error: ...",
"parity gate: top-1 agreement ..."), where every failure used to read "conversion error".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..core.errors import WbcEdgeError, first_line

QAT = "QAT fine-tune"
CONVERSION = "conversion"
METADATA = "metadata"
WRITING = "writing"
GATE = "parity gate"
STAGES = (QAT, CONVERSION, METADATA, WRITING, GATE)


class StageFailed(WbcEdgeError):
    """A variant failed in `stage`; `detail` is the one-line cause.  str() = the manifest's reason."""

    def __init__(self, stage: str, detail: str):
        self.stage = stage
        self.detail = detail
        super().__init__(reason(stage, detail))


def reason(stage: str, detail: str) -> str:
    """The manifest reason for a failure: a gate failure lists its checks, a crash names its stage."""
    return f"{stage}: {detail}" if stage == GATE else f"{stage} error: {detail}"


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Run a block as stage `name`: any exception (but KeyboardInterrupt & co.) becomes StageFailed.

    A WbcEdgeError keeps its message; anything else is reduced to "Type: first line" (TensorFlow's converter
    errors run to pages)."""
    try:
        yield
    except StageFailed:
        raise
    except WbcEdgeError as exc:
        raise StageFailed(name, first_line(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - a crash fails this variant, not the export
        raise StageFailed(name, f"{type(exc).__name__}: {first_line(exc)}") from exc
