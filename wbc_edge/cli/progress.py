"""`Progress` drawn with click: messages via click.echo, counted tasks as click progress bars on stderr."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import click

from ..core.progress import Advance, Progress


class ClickProgress(Progress):
    def say(self, message: str) -> None:
        if self.enabled:
            click.echo(message, err=True)

    @contextmanager
    def task(self, total: int, label: str) -> Iterator[Advance]:
        if not self.enabled:
            yield lambda n=1: None
            return
        with click.progressbar(length=total, label=label, file=click.get_text_stream("stderr"), show_pos=True,
                               show_eta=True, width=30) as bar:
            yield lambda n=1: bar.update(n)
