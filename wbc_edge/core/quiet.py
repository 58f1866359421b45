"""Keep native libraries' start-up lines off the console (stdlib only, so the TF-free runtime can use it).

Why: TensorFlow's C++ start-up ("failed call to cuInit" on every CPU-only machine, the oneDNN notice) and
LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." are written straight to file descriptor 2,
past Python's logging, and say nothing a user can act on.  `native_stderr_captured` sends fd 2 to a temp file
for a block and replays it if the block raises.  `wbc-edge --debug` (or WBC_EDGE_DEBUG=1) shows everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

#: Set to 1 (the CLI's --debug does) to see native libraries' start-up log.
DEBUG_ENV = "WBC_EDGE_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


@contextlib.contextmanager
def native_stderr_captured(enabled: bool | None = None) -> Iterator[None]:
    """Send file descriptor 2 (where native libraries write) to a temp file for the block; replay what was
    captured if the block raises.  Python's own sys.stderr writes go there too meanwhile."""
    if enabled is None:
        enabled = not debug_enabled()
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable fd 2 (embedded interpreters): nothing to quiet
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            sink.seek(0)
            captured = sink.read().decode("utf-8", "replace")
            if captured:
                sys.stderr.write(captured)
            raise
        else:
            _restore(saved)


def _restore(saved: int) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
