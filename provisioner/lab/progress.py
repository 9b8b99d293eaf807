"""Progress for long lab steps: a live status line on a terminal, nothing with --quiet."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Step(Protocol):
    def update(self, detail: str) -> None: ...


class _NullStep:
    def update(self, detail: str) -> None:
        pass


class Reporter:
    """`with reporter.step("building image") as s: s.update("unpacking ...")`; quiet prints nothing."""

    def __init__(self, quiet: bool = True) -> None:
        self.quiet = quiet
        self._console = None
        if not quiet:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        if self._console is not None:
            self._console.print(message)

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        if self._console is None:
            yield _NullStep()
            return
        console = self._console
        started = time.monotonic()
        with console.status(title) as status:

            class _Live:
                def update(self, detail: str) -> None:
                    detail = detail.strip().replace("[", "\\[")
                    status.update(f"{title} [dim]{detail[:90]}[/dim]" if detail else title)

            try:
                yield _Live()
            except BaseException:
                console.print(f"[red]✗[/red] {title}")
                raise
        console.print(f"[green]✓[/green] {title} [dim]({time.monotonic() - started:.1f}s)[/dim]")
