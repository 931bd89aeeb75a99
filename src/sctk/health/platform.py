"""Checks of the platform itself: database, schema, disk and the writable directories."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sctk.errors import SctkError
from sctk.health.registry import CheckContext, CheckOutcome, Status, check
from sctk.storage.engine import describe_target, ping

SLOW_DATABASE_MS = 500.0


@check("database", "The database answers a query.")
def database(ctx: CheckContext) -> CheckOutcome:
    url = ctx.engine.url
    file = url.database if url.get_backend_name() == "sqlite" else None
    if file not in (None, "", ":memory:") and not Path(file).exists():
        # connecting would create an empty file and hide what happened
        return CheckOutcome(
            "database",
            Status.CRITICAL,
            f"SQLite file {file} does not exist; restore it ('sctk restore') "
            "or create a new one ('sctk init')",
        )
    try:
        latency = ping(ctx.engine)
    except SctkError as exc:
        return CheckOutcome("database", Status.CRITICAL, exc.message)
    values = {"latency_ms": round(latency, 2), "backend": ctx.engine.dialect.name}
    where = describe_target(ctx.engine.url)
    if latency > SLOW_DATABASE_MS:
        return CheckOutcome(
            "database", Status.WARNING, f"{where} answered slowly ({latency:.0f} ms)", values
        )
    return CheckOutcome("database", Status.OK, f"{where} answered in {latency:.1f} ms", values)


@check("migrations", "The database schema is at the newest revision.", depends_on=("database",))
def migrations(ctx: CheckContext) -> CheckOutcome:
    from sctk.storage.migrate import current, head

    have, want = current(ctx.engine), head()
    values = {"current": have, "head": want}
    if have == want:
        return CheckOutcome("migrations", Status.OK, f"schema at head ({want})", values)
    return CheckOutcome(
        "migrations",
        Status.CRITICAL,
        f"schema at {have or 'no revision'}, head is {want}; run 'sctk db upgrade'",
        values,
    )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


@check("disk", "Free space on the data directory's file system is above the thresholds.")
def disk(ctx: CheckContext) -> CheckOutcome:
    h = ctx.settings.health
    usage = shutil.disk_usage(_nearest_existing(ctx.settings.home))
    # rounded once, so that the message and the measured value always agree
    free_pct = round(100.0 * usage.free / usage.total, 2)
    values = {
        "free_percent": free_pct,
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "warning_below_percent": h.disk_warning_free_percent,
        "critical_below_percent": h.disk_critical_free_percent,
    }
    free_gib = usage.free / 2**30
    if free_pct < h.disk_critical_free_percent:
        status = Status.CRITICAL
    elif free_pct < h.disk_warning_free_percent:
        status = Status.WARNING
    else:
        status = Status.OK
    return CheckOutcome("disk", status, f"{free_pct:.1f}% free ({free_gib:.1f} GiB)", values)


def _writable(name: str, path: Path) -> CheckOutcome:
    if not path.is_dir():
        return CheckOutcome(
            name, Status.CRITICAL, f"{path} does not exist; run 'sctk init'", {"path": str(path)}
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".health-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return CheckOutcome(
            name, Status.CRITICAL, f"{path} is not writable: {exc.strerror}", {"path": str(path)}
        )
    return CheckOutcome(name, Status.OK, f"{path} is writable", {"path": str(path)})


@check("data_dir", "The data directory exists and is writable.")
def data_dir(ctx: CheckContext) -> CheckOutcome:
    return _writable("data_dir", ctx.settings.home)


@check("logs_dir", "The logs directory exists and is writable.")
def logs_dir(ctx: CheckContext) -> CheckOutcome:
    return _writable("logs_dir", ctx.settings.home / "logs")
