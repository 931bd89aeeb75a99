"""A database outage as a loop sees it (the worker, the heartbeat, the scheduler): said once
when it starts and once when it ends, never a traceback per pass, with a wait between tries
that doubles up to a cap."""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine

from sctk.errors import DatabaseUnavailable, InsufficientStorage, SctkError
from sctk.storage.engine import DATABASE_ERRORS, unavailable

log = logging.getLogger(__name__)

OUTAGE_ERRORS = (*DATABASE_ERRORS, DatabaseUnavailable, InsufficientStorage)
MAX_OUTAGE_WAIT = 10.0
"""Seconds at most between a loop's tries while the database is unavailable."""


class Outage:
    """A database outage seen by one loop; LOGGER (the loop's own) says when it starts and
    ends."""

    def __init__(self, what: str, engine: Engine, first_wait: float, logger: logging.Logger = log):
        self.what = what
        self.log = logger
        self.engine = engine
        self.first_wait = first_wait
        self.failures = 0
        self.started = 0.0

    def failed(self, exc: BaseException) -> float:
        """Note a failed try; the seconds to wait before the next."""
        if self.failures == 0:
            self.started = time.monotonic()
            why = exc if isinstance(exc, SctkError) else unavailable(self.engine, exc)
            self.log.warning("%s paused: %s", self.what, why.message)
        self.failures += 1
        return min(MAX_OUTAGE_WAIT, self.first_wait * 2 ** min(self.failures - 1, 10))

    def ok(self) -> None:
        """Note a try that worked: the end of an outage, if there was one."""
        if self.failures:
            self.log.warning(
                "%s resumed: the database answers again after %.1f s (%d failed tries)",
                self.what,
                time.monotonic() - self.started,
                self.failures,
            )
            self.failures = 0
