"""Progress of the phases of a long engine step (prune, check), so none looks hung.

A step names each phase as it starts ("marking", "repacking", ...) and counts its work as
it goes (snapshots, pieces, packs, bytes); the caller's REPORT(phase, done, total) gets the
start, then at most one report every EVERY seconds, then the end. restic's prune and check
have phases that print nothing for hours on a large repository; here every one reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable

PhaseReport = Callable[[str, int, int | None], None]
EVERY = 0.2  # seconds between reports within a phase


class Phases:
    """Counts the work of the current phase and reports it (a no-op without REPORT)."""

    def __init__(self, report: PhaseReport | None, every: float = EVERY):
        self.report = report
        self.every = every
        self.name = ""
        self.done = 0
        self.total: int | None = None
        self._last = 0.0

    def _send(self) -> None:
        assert self.report is not None
        self._last = time.monotonic()
        self.report(self.name, self.done, self.total)

    def start(self, name: str, total: int | None = None) -> None:
        """Phase NAME begins (TOTAL: its units of work when known); the previous one ends."""
        if self.report is None:
            return
        self.end()
        self.name, self.done, self.total = name, 0, total
        self._send()

    def step(self, n: int = 1) -> None:
        self.at(self.done + n)

    def at(self, done: int) -> None:
        if self.report is None:
            return
        self.done = done
        if time.monotonic() - self._last >= self.every:
            self._send()

    def end(self) -> None:
        """Report the current phase's final count (once)."""
        if self.report is None or not self.name:
            return
        self._send()
        self.name = ""
