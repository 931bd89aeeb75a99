"""Progress of a long command on stderr: a rich bar on a terminal; off one (a pipe, a log
file, CI, cron) a plain line every few seconds, since a bar there draws nothing until the end
and the run looks hung."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

EVERY_SECONDS = 5.0

Update = Callable[[float, str], None]


class Ticker:
    """Plain progress lines: one every EVERY seconds (EVERY_SECONDS by default) while updates
    come, none for a run shorter than that (its result line says enough)."""

    def __init__(
        self,
        title: str,
        console: Console,
        every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.title = title
        self.console = console
        self.every = EVERY_SECONDS if every is None else every
        self.clock = clock
        self._last = clock()

    def update(self, fraction: float, message: str = "") -> None:
        self.tick(f"{max(0.0, min(fraction, 1.0)):.0%} {message}".rstrip())

    def tick(self, text: str) -> None:
        """Print 'TITLE: TEXT' when EVERY seconds have passed since the last line."""
        now = self.clock()
        if now - self._last < self.every:
            return
        self._last = now
        self.console.print(f"{self.title}: {text}", highlight=False, markup=False, soft_wrap=True)


@contextmanager
def progress(title: str, console: Console, enabled: bool = True) -> Iterator[Update]:
    """Yields update(fraction, message): a transient bar on a terminal, a Ticker off one,
    nothing when not ENABLED (--json)."""
    if not enabled:
        yield lambda fraction, message="": None
        return
    if not console.is_terminal:
        yield Ticker(title, console).update
        return
    from rich.progress import Progress

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(title, total=1.0)

        def update(fraction: float, message: str = "") -> None:
            bar.update(task, completed=fraction, description=message or title)

        yield update
