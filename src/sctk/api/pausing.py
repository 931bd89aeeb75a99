"""Pausing the served app while a command swaps its data directory (`--coordinate`).

The gate answers new requests 503 with Retry-After while paused (only /health/live, which
touches no database, still answers) and counts the requests in flight, so that the pause
returns only once none uses the database any more.
"""

from __future__ import annotations

import threading

from starlette.types import ASGIApp, Receive, Scope, Send

RETRY_AFTER_SECONDS = 5


class PauseGate:
    """Whether new requests may enter, and how many are inside."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self.closed = False

    def enter(self) -> bool:
        with self._cond:
            if self.closed:
                return False
            self._inside += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            self._cond.notify_all()

    def close(self, still_wanted=lambda: True) -> None:
        """Let no new request in and wait until those inside have left (or STILL_WANTED
        turns false: the coordinator gave up)."""
        with self._cond:
            self.closed = True
            while self._inside and still_wanted():
                self._cond.wait(0.2)

    def open(self) -> None:
        with self._cond:
            self.closed = False


class PauseMiddleware:
    """Turn requests away with 503 while the gate is closed; count the others."""

    def __init__(self, app: ASGIApp, gate: PauseGate) -> None:
        self.app, self.gate = app, gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health/live":
            await self.app(scope, receive, send)
            return
        if not self.gate.enter():
            from sctk.api.errors import problem

            response = problem(
                503,
                "The service is paused while its data directory is being restored or "
                "upgraded; retry in a few seconds.",
                title="Paused",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.gate.leave()
