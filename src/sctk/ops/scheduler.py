"""The maintenance scheduler: runs each schedule group when its cron expression falls due.

Exactly one scheduler is active per database, however many are started: each holds the
'scheduler' lease while it works and renews it from a background thread; the others wait and
take over when it expires. A group is due when its newest scheduled run started before the
latest time its cron expression names, so a run missed while the service was down happens
once at start, not once per missed slot.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import UTC, datetime

from croniter import croniter
from sqlalchemy import func, select

from sctk.config import Settings
from sctk.jobs import switches
from sctk.ops.runner import run_group
from sctk.ops.tasks import GROUPS
from sctk.runtime import Runtime
from sctk.storage import lease
from sctk.storage.engine import session_scope
from sctk.storage.models import Lease, MaintenanceRun
from sctk.storage.outage import OUTAGE_ERRORS, Outage

log = logging.getLogger(__name__)
LEASE = "scheduler"
SCHEDULED = ("schedule", "catch-up")


def cron_of(settings: Settings, group: str) -> str:
    return getattr(settings.maintenance, f"schedule_{group}")


def last_due(expression: str, now: datetime) -> datetime:
    """The latest time at or before NOW that EXPRESSION names."""
    return croniter(expression, now).get_prev(datetime)


def due_groups(settings: Settings, engine, now: datetime) -> list[tuple[str, datetime, str]]:
    """(group, due time, trigger) for each group whose latest slot has not been run yet.

    Slots before the first scheduler ever held the lease on this database do not count:
    a new installation starts on schedule instead of running every group at once.
    """
    due = []
    with session_scope(engine) as s:
        first = s.get(Lease, LEASE)
        since = first.acquired_at if first is not None else now
        for group in GROUPS:
            slot = last_due(cron_of(settings, group), now)
            newest = s.scalar(
                select(func.max(MaintenanceRun.started_at)).where(
                    MaintenanceRun.task == group, MaintenanceRun.trigger.in_(SCHEDULED)
                )
            )
            if slot < since:
                continue
            if newest is None or newest < slot:
                # a slot older than one poll interval was missed (service down): catch up once
                late = (now - slot).total_seconds() > 2 * settings.maintenance.poll_seconds
                due.append((group, slot, "catch-up" if late else "schedule"))
    return due


class Scheduler:
    """Runs the maintenance groups when due, on RUNTIME's engine (the process's: the served
    app's or the `sctk scheduler` command's), while it holds the scheduler lease."""

    def __init__(self, runtime: Runtime, holder: str | None = None, clock=None):
        self.runtime = runtime
        self.settings = runtime.settings
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.clock = clock or (lambda: datetime.now(UTC))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.engine = runtime.engine

    # one pass; the loop and the tests call it
    def tick(self) -> list[str]:
        """Run what is due if this scheduler holds the lease; the groups it ran."""
        m = self.settings.maintenance
        with session_scope(self.engine) as s:
            if not lease.acquire(s, LEASE, self.holder, m.lease_seconds):
                return []
            if switches.is_on(s, switches.SCHEDULER_PAUSED):
                return []
        ran = []
        for group, slot, trigger in due_groups(self.settings, self.engine, self.clock()):
            if self._stop.is_set():
                break
            log.info("running %s maintenance (due %s, %s)", group, slot.isoformat(), trigger)
            with _Renewing(self):
                run_group(self.runtime, group, trigger=trigger, actor="scheduler")
            ran.append(group)
        return ran

    def run_forever(self) -> None:
        poll = self.settings.maintenance.poll_seconds
        outage = Outage("scheduler", self.engine, poll, log)
        while not self._stop.is_set():
            wait = poll
            try:
                self.tick()
                outage.ok()
            except OUTAGE_ERRORS as exc:  # the scheduler outlives a database outage, quietly
                wait = max(poll, outage.failed(exc))
            except Exception:  # a bug: said in full, then the scheduler goes on
                log.exception("scheduler pass failed")
            self._stop.wait(wait)
        with session_scope(self.engine) as s:
            lease.release(s, LEASE, self.holder)

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self.run_forever, name="sctk-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        # no pooled connection outlives the scheduler (a swap of the data directory may
        # follow); the engine itself is the runtime's, closed by whoever built it
        self.runtime.release()


class _Renewing:
    """Renews the lease while a long group runs, so no other scheduler takes over mid-run."""

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self.done = threading.Event()

    def _renew(self) -> None:
        period = self.scheduler.settings.maintenance.lease_seconds / 3
        while not self.done.wait(period):
            with session_scope(self.scheduler.engine) as s:
                lease.acquire(
                    s,
                    LEASE,
                    self.scheduler.holder,
                    self.scheduler.settings.maintenance.lease_seconds,
                )

    def __enter__(self) -> _Renewing:
        self.thread = threading.Thread(target=self._renew, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
