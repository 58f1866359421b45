"""The one way the library reports progress: a small interface the CLI implements with click.

Library code (data, train, export, bench, adapt, diagnose) never imports click and never prints directly;
it calls `say()` for one-line messages and `task()` for countable work.  The default `Progress` writes
plain lines to stderr (so a notebook or a log file sees them), `Progress.silent()` drops everything, and
`wbc_edge.cli.progress.ClickProgress` draws click progress bars.  Pass one as `progress=`.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, Protocol


class Advance(Protocol):
    def __call__(self, n: int = 1) -> None: ...


class Progress:
    """Plain-text progress on stderr: a line per message, and a line per ~10 % of a counted task."""

    def __init__(self, stream=None, *, enabled: bool = True):
        self._stream = stream
        self.enabled = enabled

    @classmethod
    def silent(cls) -> "Progress":
        return cls(enabled=False)

    def say(self, message: str) -> None:
        """One line for the user (what is happening, what was written)."""
        if self.enabled:
            print(message, file=self._stream or sys.stderr, flush=True)

    @contextmanager
    def task(self, total: int, label: str) -> Iterator[Advance]:
        """Counted work: `with progress.task(n, "Scanning") as advance: ... advance(k)`."""
        done = 0
        step = max(1, total // 10)
        next_report = step
        start = time.monotonic()

        def advance(n: int = 1) -> None:
            nonlocal done, next_report
            done += n
            if self.enabled and (done >= next_report or done == total):
                rate = done / max(time.monotonic() - start, 1e-9)
                self.say(f"  {label}: {done}/{total} ({rate:.1f}/s)")
                while next_report <= done:
                    next_report += step

        yield advance


def resolve(progress: "Progress | bool | None") -> Progress:
    """Accept the old `progress: bool` / `verbose: bool` arguments too: True -> stderr, False/None -> silent."""
    if isinstance(progress, Progress):
        return progress
    return Progress() if progress else Progress.silent()
