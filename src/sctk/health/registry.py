"""The check registry: named probes, each returning a status, a message and measured values."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from sctk.config import Settings
from sctk.registry import Registry
from sctk.storage.models import utcnow

if TYPE_CHECKING:  # a type only: the runtime sits beside the services it holds
    from sctk.runtime import Runtime

log = logging.getLogger(__name__)


class Status(IntEnum):
    """Nagios plugin exit codes."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def severity(self) -> int:
        # UNKNOWN is worse than WARNING (we could not tell) but not as bad as CRITICAL
        return {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}[self]


@dataclass
class CheckOutcome:
    name: str
    status: Status
    message: str
    values: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.name,
            "message": self.message,
            "values": self.values,
            "duration_ms": round(self.duration_ms, 2),
        }


class CheckContext:
    """What a check may use: the runtime of the process that runs it (its settings, and its
    engine, built when a check first asks for it: a check of the settings runs without)."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.settings: Settings = runtime.settings
        self.outcomes: dict[str, CheckOutcome] = {}
        self.running: str | None = None  # the check under way (named when it overruns)

    @property
    def engine(self) -> Engine:
        return self.runtime.engine


CheckFunc = Callable[[CheckContext], CheckOutcome]


@dataclass(frozen=True)
class Check:
    name: str
    description: str
    func: CheckFunc
    depends_on: tuple[str, ...] = ()


# declared by each domain's plugin (sctk.plugins), and by installed packages' plugins
CHECKS: Registry[Check] = Registry("health check", "health_checks")


def check(name: str, description: str, depends_on: tuple[str, ...] = ()):
    """Register a check. A check whose dependency is not OK/WARNING reports UNKNOWN."""

    def register(func: CheckFunc) -> CheckFunc:
        CHECKS.add(name, Check(name, description, func, depends_on), func.__module__)
        return func

    return register


def registered() -> dict[str, Check]:
    return dict(CHECKS)


# What the connectivity check asks besides the database and the configured host:port
# endpoints: a domain whose target a plain TCP probe cannot judge (the backup repository,
# reached through its storage driver) declares a probe here, beside its health checks, so
# that the check reads the domain's target without importing the domain.
# A probe: settings -> None (nothing to probe) or {"name", "target", "ok", "latency_ms" |
# "error", ...}, within monitor.connect_timeout_seconds.
Probe = Callable[[Settings], "dict[str, Any] | None"]
PROBES: Registry[Probe] = Registry("connectivity probe", "health_checks")


def connectivity_probe(name: str):
    """Declare a probe the connectivity check runs beside its endpoints (see PROBES)."""

    def register(func: Probe) -> Probe:
        PROBES.add(name, func, func.__module__)
        return func

    return register


@dataclass
class HealthReport:
    outcomes: list[CheckOutcome]
    checked_at: datetime

    @property
    def status(self) -> Status:
        worst = max(self.outcomes, key=lambda o: o.status.severity, default=None)
        return worst.status if worst else Status.UNKNOWN

    @property
    def failing(self) -> list[CheckOutcome]:
        """Checks that make the service not ready: CRITICAL or UNKNOWN."""
        return [o for o in self.outcomes if o.status in (Status.CRITICAL, Status.UNKNOWN)]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.name,
            "checked_at": self.checked_at.isoformat(),
            "checks": [o.as_dict() for o in self.outcomes],
        }


def _run_one(entry: Check, ctx: CheckContext) -> CheckOutcome:
    blocked = [
        d
        for d in entry.depends_on
        if d in ctx.outcomes and ctx.outcomes[d].status not in (Status.OK, Status.WARNING)
    ]
    if blocked:
        return CheckOutcome(entry.name, Status.UNKNOWN, f"not checked: {', '.join(blocked)} failed")
    start = time.perf_counter()
    ctx.running = entry.name
    try:
        outcome = entry.func(ctx)
    except Exception as exc:  # a broken probe must not take the whole report down
        outcome = CheckOutcome(entry.name, Status.UNKNOWN, _raised(exc, ctx))
    outcome.duration_ms = (time.perf_counter() - start) * 1000.0
    return outcome


def _raised(exc: Exception, ctx: CheckContext) -> str:
    """The one line a check that raised reports: a database error's sentence, else the
    error's first line (the traceback goes to the log file, never into the report)."""
    from sctk.errors import SctkError
    from sctk.storage.engine import DATABASE_ERRORS, database_error, first_line

    if isinstance(exc, DATABASE_ERRORS):
        log.warning("health check %s: database error: %s", ctx.running, first_line(exc))
        url = ctx._engine.url if ctx._engine is not None else None
        return database_error(exc, url, ctx.settings).message
    if isinstance(exc, SctkError):
        return exc.message
    log.error("health check %s raised", ctx.running, exc_info=exc)
    return f"check raised {type(exc).__name__}: {first_line(exc)}"


def _selected(names: list[str] | None) -> list[Check]:
    checks = registered()
    if names:
        unknown = [n for n in names if n not in checks]
        if unknown:
            from sctk.errors import SctkError

            raise SctkError(f"Unknown check '{unknown[0]}'; known checks: {', '.join(checks)}.")
    return [c for c in in_dependency_order(checks) if not names or c.name in names]


def in_dependency_order(checks: dict[str, Check]) -> list[Check]:
    """The checks in declaration order, except that each comes after the checks it depends
    on (which plugins may declare in any order). A circle of dependencies is a declaration
    error; a dependency on a check nobody declared is left to the run (UNKNOWN there)."""
    done: dict[str, Check] = {}
    visiting: list[str] = []

    def visit(check: Check) -> None:
        if check.name in done:
            return
        if check.name in visiting:
            circle = " -> ".join([*visiting[visiting.index(check.name) :], check.name])
            raise ValueError(f"health checks depend on each other in a circle: {circle}")
        visiting.append(check.name)
        for name in check.depends_on:
            if name in checks:
                visit(checks[name])
        visiting.pop()
        done[check.name] = check

    for check in checks.values():
        visit(check)
    return list(done.values())


def _run_all(entries: list[Check], ctx: CheckContext) -> None:
    try:
        for entry in entries:
            ctx.outcomes[entry.name] = _run_one(entry, ctx)
    finally:
        ctx.running = None


def run_checks(rt: Runtime, names: list[str] | None = None) -> HealthReport:
    """Run the named checks (default: all) on RT, each after those it depends on."""
    entries = _selected(names)
    ctx = CheckContext(rt)
    _run_all(entries, ctx)
    return HealthReport(list(ctx.outcomes.values()), utcnow())


# One probe at a time per engine: while a stalled database holds one up, later callers wait
# on the same run instead of piling up threads that all wait on the same server.
_in_flight: dict[int, tuple[threading.Thread, CheckContext, list[Check]]] = {}
_in_flight_lock = threading.Lock()


def run_checks_within(rt: Runtime, seconds: float) -> HealthReport:
    """Run every check, answering within SECONDS whatever a check waits on: a check still
    running then is CRITICAL ('did not finish within'), the ones after it UNKNOWN. The run
    itself goes on in the background (every database wait has its own bound) and later
    calls wait for it rather than start another."""
    key = id(rt)
    with _in_flight_lock:
        running = _in_flight.get(key)
        if running is None or not running[0].is_alive():
            entries = _selected(None)
            ctx = CheckContext(rt)
            thread = threading.Thread(
                target=_run_all, args=(entries, ctx), name="health-probe", daemon=True
            )
            running = (thread, ctx, entries)
            _in_flight[key] = running
            thread.start()
    thread, ctx, entries = running
    thread.join(seconds)
    outcomes = dict(ctx.outcomes)
    if thread.is_alive():
        stuck = ctx.running
        for entry in entries:
            if entry.name in outcomes:
                continue
            if entry.name == stuck:
                outcomes[entry.name] = CheckOutcome(
                    entry.name, Status.CRITICAL, f"did not finish within {seconds:g} s"
                )
            else:
                outcomes[entry.name] = CheckOutcome(
                    entry.name, Status.UNKNOWN, f"not checked: {stuck} did not finish"
                )
    return HealthReport([outcomes[e.name] for e in entries if e.name in outcomes], utcnow())


def record(engine: Engine, report: HealthReport) -> None:
    """Store a report's outcomes so trends and the audit can look back."""
    from sctk.storage.engine import session_scope
    from sctk.storage.models import CheckResult

    with session_scope(engine) as session:
        for o in report.outcomes:
            session.add(
                CheckResult(
                    name=o.name,
                    status=o.status.name,
                    message=o.message,
                    values=o.values,
                    checked_at=report.checked_at,
                )
            )
