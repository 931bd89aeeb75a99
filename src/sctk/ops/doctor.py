"""`sctk doctor`: the maintenance guide's troubleshooting, as findings with their fixes.

Three areas, as in the guide: the service does not start (start-up), it is slow
(performance), its data may be damaged (data). Each finding says what is wrong and gives the
command that fixes it. The health-check registry supplies the shared probes (one source for
`sctk health`, `/health/ready` and this); the doctor adds the deeper, slower ones.
"""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from sctk.config import Settings
from sctk.errors import SctkError
from sctk.health import Status, run_checks
from sctk.runtime import Runtime
from sctk.storage.engine import session_scope

AREAS = ("startup", "performance", "data")

# which registry checks belong to which area, and the command that fixes a failing one
CHECK_AREAS: dict[str, tuple[str, str]] = {
    "database": ("startup", "check database_url with 'sctk config show' and start the database"),
    "migrations": ("startup", "sctk db upgrade"),
    "data_dir": ("startup", "sctk init  (or fix the directory's owner and permissions)"),
    "logs_dir": ("startup", "sctk init  (or fix the logs directory's owner and permissions)"),
    "keyring": (
        "startup",
        "chmod 700 <data dir>/keys; restore the keys with 'sctk restore --only keys'",
    ),
    "disk": (
        "performance",
        "free space: 'sctk backup prune', clear <data dir>/tmp, archive results",
    ),
    "memory": ("performance", "find the process using memory ('sctk monitor status'); restart it"),
    "cpu_load": ("performance", "lower the load or add cores; 'sctk jobs pause' holds new jobs"),
    "workers": ("performance", "start a worker: 'sctk worker' (stale jobs are re-queued)"),
    "scheduler": ("performance", "start it: 'sctk serve' runs one, or 'sctk scheduler'"),
    "log_errors": ("performance", "read the newest errors in <data dir>/logs/sctk.log"),
    "connectivity": (
        "startup",
        "check the endpoint's address in 'sctk config show' and the network",
    ),
}
SEVERITY = {
    Status.OK: "ok",
    Status.WARNING: "warn",
    Status.CRITICAL: "fail",
    Status.UNKNOWN: "warn",
}
ORDER = {"ok": 0, "warn": 1, "fail": 2}


@dataclass
class Finding:
    area: str
    name: str
    severity: str  # ok | warn | fail
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def worst(findings: list[Finding]) -> str:
    return max((f.severity for f in findings), key=ORDER.__getitem__, default="ok")


# --- start-up ----------------------------------------------------------------------------


def _port_free(settings: Settings) -> Finding:
    from sctk.runstate import served

    host, port = settings.server.host, settings.server.port
    running = served(settings.home)
    if running is not None:
        # the address it serves, which 'serve --port' may have made another than the setting
        where = f" on {running.url}" if running.url else ""
        return Finding(
            "startup",
            "port",
            "ok",
            f"sctk already serves this data directory (pid {running.pid}){where}",
        )
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return Finding(
                "startup",
                "port",
                "fail",
                f"cannot bind {host}:{port} ({exc.strerror}); another program holds it",
                f"stop that program, or 'sctk config set server.port {port + 1}'",
            )
    return Finding("startup", "port", "ok", f"{host}:{port} is free")


def _tls_files(settings: Settings) -> Finding:
    missing = [
        str(p)
        for p in (settings.server.tls_cert, settings.server.tls_key)
        if p is not None and not Path(p).is_file()
    ]
    if missing:
        return Finding(
            "startup",
            "tls",
            "fail",
            f"TLS file not found: {', '.join(missing)}",
            "sctk config set server.tls_cert PATH / server.tls_key PATH",
        )
    return Finding("startup", "tls", "ok", "no TLS files configured or all present")


def _stale_pid(settings: Settings) -> Finding:
    from sctk.runstate import stale

    gone = stale(settings.home)
    if gone:
        return Finding(
            "startup",
            "pid_file",
            "warn",
            f"{', '.join(map(str, gone))} name(s) a process that is gone (an unclean stop)",
            f"rm {' '.join(map(str, gone))}",
        )
    return Finding("startup", "pid_file", "ok", "no stale pid file")


# --- performance -------------------------------------------------------------------------


def _queue(settings: Settings, engine) -> list[Finding]:
    from sctk.jobs import switches
    from sctk.storage.models import Job

    with session_scope(engine) as s:
        queued = s.scalar(select(func.count()).select_from(Job).where(Job.status == "queued"))
        oldest = s.scalar(select(func.min(Job.created_at)).where(Job.status == "queued"))
        paused = switches.is_on(s, switches.JOBS_PAUSED)
    found = []
    if paused:
        found.append(
            Finding(
                "performance",
                "job_intake",
                "warn",
                "job intake is paused",
                "sctk jobs resume",
            )
        )
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
    if queued and age > 600:
        found.append(
            Finding(
                "performance",
                "queue",
                "warn",
                f"{queued} jobs queued, the oldest for {age / 60:.0f} min",
                "start more workers ('sctk worker') or raise jobs.concurrency",
            )
        )
    else:
        found.append(Finding("performance", "queue", "ok", f"{queued} jobs queued"))
    return found


def _sqlite_free_pages(engine) -> Finding:
    if engine.dialect.name != "sqlite":
        return Finding("performance", "db_bloat", "ok", "PostgreSQL: see VACUUM in maintenance")
    with engine.connect() as conn:
        free = conn.execute(text("PRAGMA freelist_count")).scalar() or 0
        pages = conn.execute(text("PRAGMA page_count")).scalar() or 1
    share = free / pages
    if share > 0.25 and pages > 1000:
        return Finding(
            "performance",
            "db_bloat",
            "warn",
            f"{share:.0%} of the database file is free pages",
            "sctk maintenance run reindex  (runs VACUUM)",
        )
    return Finding("performance", "db_bloat", "ok", f"{share:.0%} free pages")


# --- data --------------------------------------------------------------------------------


def _data(settings: Settings, engine) -> list[Finding]:
    from sctk.ops import integrity
    from sctk.security import audit_log

    found = []
    problems = integrity.database_problems(engine)
    found.append(
        Finding(
            "data",
            "database",
            "fail",
            "; ".join(problems[:3]),
            "restore the database: 'sctk restore --latest --only db'",
        )
        if problems
        else Finding("data", "database", "ok", "the database's integrity check passes")
    )
    with session_scope(engine) as s:
        report = integrity.check_files(s, settings.home)
        chain = audit_log.verify(s)
    integrity.check_json(settings.home, report)
    for p in report.problems:
        found.append(
            Finding(
                "data",
                "files",
                "fail",
                p.sentence(),
                f"sctk restore --latest --file {p.path}",
            )
        )
    if report.ok:
        found.append(
            Finding("data", "files", "ok", f"{report.files_checked} files match their records")
        )
    found.append(
        Finding("data", "audit_chain", "ok", f"audit chain intact ({chain.checked} entries)")
        if chain.ok
        else Finding(
            "data",
            "audit_chain",
            "fail",
            f"audit chain broken at entry {chain.broken_seq}: {chain.problem}",
            "sctk audit-log verify  (then investigate who changed the log)",
        )
    )
    return found


def _leftovers(settings: Settings) -> Finding:
    """Temporary files of writers killed midway: they hold space and nothing else."""
    from sctk.ops.maintenance.daily import leftovers

    found = leftovers(settings)
    if not found:
        return Finding("data", "leftovers", "ok", "no temporary files left by interrupted writes")
    shown = ", ".join(t.path.relative_to(settings.home).as_posix() for t in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    size = sum(t.size for t in found)
    return Finding(
        "data",
        "leftovers",
        "warn",
        f"{len(found)} temporary file(s) left by interrupted writes ({size} bytes): {shown}{more}",
        "sctk maintenance run tmp",
    )


def _selftest(settings: Settings) -> Finding:
    """`sctk selftest --quick` in a child process: whether the installed product works at all,
    apart from this data directory (a scratch home; nothing here is touched)."""
    from sctk.ops import selftest
    from sctk.ops.dependency_upgrade import lock_dir

    report = selftest.run_isolated(quick=True)
    if report.ok:
        return Finding("startup", "selftest", "ok", report.sentence())
    locks = sorted(lock_dir(settings).glob("lock-*.txt"))
    fix = "run 'sctk selftest' to see every step"
    if locks:
        fix += f"; after a package upgrade, reinstall the saved set: pip install -r {locks[-1]}"
    return Finding("startup", "selftest", "fail", report.sentence(), fix)


# --- the backup repository on remote storage -------------------------------------------------

# what a remote repository's failing probe means, and its fix: three different findings
REMOTE_PROBLEMS: dict[str, tuple[str, str]] = {
    "driver": (
        "backup_remote_driver",
        "install the storage driver: pip install 'sctk[s3]' (s3://) or 'sctk[sftp]' (sftp://)",
    ),
    "endpoint": (
        "backup_remote_endpoint",
        "check the endpoint (AWS_ENDPOINT_URL or [backup.storage_options.s3] endpoint_url; "
        "the SFTP host and port in backup.repository) and the network",
    ),
    "credentials": (
        "backup_remote_credentials",
        "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile (SFTP: the SSH "
        "key or agent), or [backup.storage_options]",
    ),
    "storage": ("backup_remote", "check backup.repository with 'sctk config show'"),
}


def _remote_repository(report) -> list[Finding]:
    """The remote repository as the connectivity check found it (none for a local one)."""
    outcome = next((o for o in report.outcomes if o.name == "connectivity"), None)
    endpoints = outcome.values.get("endpoints", []) if outcome is not None else []
    found = next((e for e in endpoints if e.get("name") == "backup repository"), None)
    if found is None:
        return []
    if found["ok"]:
        said = f"{found['target']} answers in {found['latency_ms']:.0f} ms, credentials accepted"
        return [Finding("startup", "backup_remote", "ok", said)]
    name, fix = REMOTE_PROBLEMS[found.get("problem", "storage")]
    return [Finding("startup", name, "fail", found["error"], fix)]


# --- the doctor --------------------------------------------------------------------------


def diagnose(rt: Runtime, areas: list[str] | None = None, selftest: bool = False) -> list[Finding]:
    """Findings for AREAS (default: all), failing ones first within each area; SELFTEST adds
    the quick self-test of the installed product (start-up, some seconds)."""
    settings = rt.settings
    areas = areas or list(AREAS)
    unknown = [a for a in areas if a not in AREAS]
    if unknown:
        raise SctkError(f"Unknown area '{unknown[0]}'; choose from {', '.join(AREAS)}.")
    findings: list[Finding] = []
    report = run_checks(rt)
    for outcome in report.outcomes:
        area, fix = CHECK_AREAS.get(outcome.name, ("startup", ""))
        if area in areas:
            severity = SEVERITY[outcome.status]
            findings.append(
                Finding(
                    area, outcome.name, severity, outcome.message, fix if severity != "ok" else ""
                )
            )
    database_ok = all(
        o.status is Status.OK for o in report.outcomes if o.name in ("database", "migrations")
    )
    if "startup" in areas:
        findings += [_port_free(settings), _tls_files(settings), _stale_pid(settings)]
        if selftest:
            findings.append(_selftest(settings))
        findings += _remote_repository(report)
    if database_ok:
        if "performance" in areas:
            findings += _queue(settings, rt.engine)
            findings.append(_sqlite_free_pages(rt.engine))
        if "data" in areas:
            findings += _data(settings, rt.engine)
            findings.append(_leftovers(settings))
    elif set(areas) & {"performance", "data"}:
        findings.append(
            Finding(
                "startup",
                "deeper_checks",
                "warn",
                "performance and data were not examined: the database is not reachable or not "
                "at the newest schema",
                "fix the start-up findings first, then run 'sctk doctor' again",
            )
        )
    findings.sort(key=lambda f: (areas.index(f.area), -ORDER[f.severity]))
    return findings
