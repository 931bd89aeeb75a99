"""The compliance audit: weighted checks grouped as in the maintenance guide (data security,
backups, access, logging, network and TLS), each with its evidence and the command that fixes
it, a score out of 100, a report file in reports/ and a stored history.

Score = 100 x (weight of passing checks) / (weight of checks that apply). A check that does
not apply here (no TLS certificate configured on a loopback-only service) counts for nothing.
"""

from __future__ import annotations

import html
import ipaddress
import json
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sctk.config import Settings
from sctk.errors import SctkError
from sctk.fsutil import atomic_write
from sctk.ops import access_review, integrity
from sctk.runtime import Runtime
from sctk.storage.models import BackupRun, BackupSnapshot, MaintenanceRun

FORMATS = ("table", "json", "md", "html")
HISTORY_TASK = "compliance_audit"


@dataclass
class AuditCheck:
    group: str
    name: str
    weight: int
    status: str  # pass | fail | n/a
    evidence: str
    fix: str = ""


@dataclass
class AuditReport:
    at: datetime
    score: float
    checks: list[AuditCheck] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "score": self.score,
            "checks": [asdict(c) for c in self.checks],
        }


def _check(group, name, weight, ok, evidence, fix="") -> AuditCheck:
    if ok is None:
        return AuditCheck(group, name, weight, "n/a", evidence)
    return AuditCheck(group, name, weight, "pass" if ok else "fail", evidence, "" if ok else fix)


# --- data security -------------------------------------------------------------------------


def _keyring(settings: Settings, session: Session, engine) -> list[AuditCheck]:
    from sctk.security import rotation

    keys = settings.home / "keys"
    files = [p for p in keys.glob("*") if p.is_file()]
    wide = [p.name for p in files if stat.S_IMODE(p.stat().st_mode) & 0o177]
    dir_ok = keys.is_dir() and not stat.S_IMODE(keys.stat().st_mode) & 0o077
    age = rotation.newest_key_age(settings).days
    limit = settings.maintenance.key_max_age_days
    problems = integrity.database_problems(engine)
    return [
        _check(
            "data security",
            "keyring permissions",
            10,
            dir_ok and not wide,
            f"keys/ {'0700' if dir_ok else 'open to others'}; files wider than 0600: "
            f"{', '.join(wide) or 'none'}",
            f"chmod 700 {keys} && chmod 600 {keys}/*",
        ),
        _check(
            "data security",
            "key age",
            5,
            age <= limit,
            f"newest key {age} days old (limit {limit:g})",
            "sctk keys rotate",
        ),
        _check(
            "data security",
            "database integrity",
            10,
            not problems,
            "; ".join(problems[:3]) or "integrity check passes",
            "sctk restore --latest --only db",
        ),
    ]


# --- backups -------------------------------------------------------------------------------


def _installed_at(session: Session) -> datetime:
    """When the data directory's database was created: its first audit entry."""
    from sctk.storage.models import AuditEntry

    return session.scalar(select(func.min(AuditEntry.at))) or datetime.now(UTC)


def _backups(settings: Settings, session: Session, engine) -> list[AuditCheck]:
    from sctk.backup import kinds
    from sctk.backup.passphrase import configuration_problem

    now = datetime.now(UTC)
    installed = _installed_at(session)
    # the install day is not owed a backup: the daily maintenance takes the first one on the
    # next day (counted for the last 7 days, or since installation when younger)
    first_day = max((installed + timedelta(days=1)).date(), (now - timedelta(days=7)).date())
    days = [first_day + timedelta(days=i) for i in range((now.date() - first_day).days + 1)]
    # a safety snapshot taken before a restore is not the day's backup
    taken = {
        row.time.date()
        for row in session.scalars(
            select(BackupSnapshot).where(BackupSnapshot.time >= now - timedelta(days=8))
        )
        if kinds.kind_of(row) == kinds.REGULAR
    }
    missing = [d.isoformat() for d in days if d not in taken]
    ever = session.scalar(select(func.count()).select_from(BackupSnapshot)) > 0
    verified = [
        r.finished_at
        for r in session.scalars(
            select(BackupRun).where(BackupRun.kind == "verify", BackupRun.status == "succeeded")
        )
        if (r.details or {}).get("read_data") and r.finished_at
    ]
    newest = max(verified, default=None)
    fresh = newest is not None and now - newest <= timedelta(days=30)
    problem = configuration_problem(settings)
    checks = [
        _check(
            "backups",
            "backup passphrase",
            5,
            problem is None,
            problem or "a passphrase is at hand (SCTK_BACKUP_PASSPHRASE or backup.passphrase_file)",
            "sctk config set backup.passphrase_file PATH  (a file of mode 0600 whose first "
            "line is the passphrase; keep a copy away from this machine)",
        )
    ]
    if problem is not None and not ever:
        # no repository can exist yet: the passphrase is the finding, not its consequences
        waiting = "no backups until a passphrase is set (see 'backup passphrase')"
        return [
            *checks,
            _check("backups", "daily backups", 10, None, waiting),
            _check("backups", "verified backup", 10, None, waiting),
            _offsite(settings, session, now),  # where copies go is decided apart
        ]
    return [
        *checks,
        _check(
            "backups",
            "daily backups",
            10,
            not missing,
            f"days without a backup: {', '.join(missing) or 'none'} (last 7 days"
            + (
                ", the install day excepted)"
                if first_day > (now - timedelta(days=7)).date()
                else ")"
            ),
            ("" if ever else "sctk backup init && ")
            + "sctk backup create --label daily  (the daily maintenance takes one)",
        ),
        _check(
            "backups",
            "verified backup",
            10,
            fresh if ever else None,
            f"newest full verification: {newest.isoformat() if newest else 'never'}"
            if ever
            else "no snapshot to verify yet",
            "sctk backup verify --latest --read-data",
        ),
        _offsite(settings, session, now),
    ]


def _offsite(settings: Settings, session: Session, now: datetime) -> AuditCheck:
    """A copy away from this machine: the repository itself is remote, or `sctk backup copy`
    succeeded within the last 8 days (a weekly copy, with a day's slack)."""
    from sctk.backup.location import display, local_path, repo_url

    url = repo_url(settings)
    if local_path(url) is None:
        return _check(
            "backups", "off-site copy", 10, True, f"the repository is off-site: {display(url)}"
        )
    copy = session.scalar(
        select(BackupRun)
        .where(BackupRun.kind == "copy", BackupRun.status == "succeeded")
        .where(BackupRun.finished_at >= now - timedelta(days=8))
        .order_by(BackupRun.finished_at.desc())
        .limit(1)
    )
    if copy is not None:
        to = (copy.details or {}).get("to", "another repository")
        return _check(
            "backups",
            "off-site copy",
            10,
            True,
            f"copied to {to} at {copy.finished_at.isoformat(timespec='seconds')}",
        )
    return _check(
        "backups",
        "off-site copy",
        10,
        False,
        f"the repository is on this machine ({url}) and no copy was made in the last 8 days",
        "sctk backup copy --to URL  (sftp://, s3:// or a mounted directory; or sctk config set "
        "backup.repository URL)",
    )


# --- access --------------------------------------------------------------------------------


def _access(settings: Settings, session: Session, engine) -> list[AuditCheck]:
    sec = settings.security
    admins = access_review.admins(session)
    dormant = access_review.dormant(session, sec.dormant_days)
    open_tokens = access_review.tokens_without_expiry(session)
    first = access_review.first_admin_password_unchanged(session)
    return [
        _check(
            "access",
            "number of admins",
            5,
            1 <= len(admins) <= sec.max_admins,
            f"{len(admins)} admin(s) (at most {sec.max_admins})",
            "sctk users set-role NAME analyst",
        ),
        _check(
            "access",
            "dormant accounts",
            5,
            not dormant,
            f"no login for {sec.dormant_days} days: "
            f"{', '.join(u.username for u in dormant) or 'none'}",
            " && ".join(f"sctk users disable {u.username}" for u in dormant),
        ),
        _check(
            "access",
            "tokens without expiry",
            5,
            not open_tokens,
            f"{len(open_tokens)} token(s) that never expire",
            " && ".join(f"sctk tokens revoke {t.id}" for t, _ in open_tokens),
        ),
        _check(
            "access",
            "first admin password changed",
            10,
            first is None,
            "the admin password given at installation (SCTK_ADMIN_PASSWORD) is unchanged"
            if first
            else "changed since installation, or generated by sctk init and shown once",
            f"sctk users reset-password {first.username if first else 'admin'}",
        ),
    ]


# --- logging -------------------------------------------------------------------------------


def _logging(settings: Settings, session: Session, engine) -> list[AuditCheck]:
    from sctk.security import audit_log

    chain = audit_log.verify(session)
    kept = settings.maintenance.log_retention_days
    need = settings.security.log_retention_days_required
    return [
        _check(
            "logging",
            "audit chain intact",
            10,
            chain.ok,
            f"{chain.checked} entries" + ("" if chain.ok else f"; broken at {chain.broken_seq}"),
            "sctk audit-log verify  (then investigate the change)",
        ),
        _check(
            "logging",
            "log retention",
            5,
            kept >= need,
            f"compressed logs kept {kept:g} days (required {need})",
            f"sctk config set maintenance.log_retention_days {need}",
        ),
    ]


# --- network and TLS -----------------------------------------------------------------------


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _network(settings: Settings, session: Session, engine) -> list[AuditCheck]:
    server = settings.server
    checks = []
    if server.tls_cert is None:
        checks.append(
            _check(
                "network and TLS", "certificate expiry", 5, None, "no TLS certificate configured"
            )
        )
    else:
        from cryptography import x509

        try:
            cert = x509.load_pem_x509_certificate(Path(server.tls_cert).read_bytes())
            left = (cert.not_valid_after_utc - datetime.now(UTC)).days
            checks.append(
                _check(
                    "network and TLS",
                    "certificate expiry",
                    5,
                    left > 30,
                    f"certificate expires in {left} days",
                    "renew the certificate; sctk config set server.tls_cert PATH",
                )
            )
        except (OSError, ValueError) as exc:
            checks.append(
                _check(
                    "network and TLS",
                    "certificate expiry",
                    5,
                    False,
                    f"certificate unreadable: {exc}",
                    "sctk config set server.tls_cert PATH",
                )
            )
    from sctk import runstate

    # a running service is judged by the address it serves ('serve --port' and its other
    # flags override the configuration), else by the configured one
    host, port, tls, verb = server.host, server.port, server.tls_cert is not None, "listens"
    served = runstate.served(settings.home)
    if served is not None and served.port is not None:
        host, port, tls = served.host or host, served.port, served.tls
        verb = f"serves (pid {served.pid})"
    exposed = not _loopback(host) and not tls
    checks.append(
        _check(
            "network and TLS",
            "plain HTTP beyond loopback",
            10,
            not exposed,
            f"{verb} on {host}:{port} {'with' if tls else 'without'} TLS",
            "sctk config set server.tls_cert PATH && sctk config set server.tls_key PATH",
        )
    )
    return checks


def _disk(settings: Settings, session: Session, engine) -> list[AuditCheck]:
    from sctk.health import Status, run_checks

    # the disk check reads the data directory only: a runtime lent this audit's engine
    (disk,) = run_checks(Runtime(settings, engine=engine), ["disk"]).outcomes
    return [
        _check(
            "data security",
            "disk headroom",
            5,
            disk.status is Status.OK,
            disk.message,
            "free space: sctk backup prune; sctk maintenance run tmp",
        )
    ]


SECTIONS: list[Callable[[Settings, Session, Any], list[AuditCheck]]] = [
    _keyring,
    _disk,
    _backups,
    _access,
    _logging,
    _network,
]


def run_audit(rt: Runtime) -> AuditReport:
    settings = rt.settings
    with rt.session() as s:
        checks = [c for section in SECTIONS for c in section(settings, s, rt.engine)]
    counted = [c for c in checks if c.status != "n/a"]
    total = sum(c.weight for c in counted)
    passed = sum(c.weight for c in counted if c.status == "pass")
    score = round(100.0 * passed / total, 1) if total else 100.0
    return AuditReport(datetime.now(UTC), score, checks)


# --- output and history --------------------------------------------------------------------


def render(report: AuditReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2)
    if fmt == "md":
        lines = [
            f"# Compliance audit {report.at:%Y-%m-%d %H:%M} UTC",
            "",
            f"Score: **{report.score:g} / 100**",
            "",
            "| group | check | weight | status | evidence | fix |",
            "| --- | --- | ---: | --- | --- | --- |",
        ]
        for c in report.checks:
            fix = f"`{c.fix}`" if c.fix else ""
            lines.append(
                f"| {c.group} | {c.name} | {c.weight} | {c.status} | {c.evidence} | {fix} |"
            )
        return "\n".join(lines) + "\n"
    if fmt == "html":
        rows = "".join(
            f"<tr class='{c.status.replace('/', '')}'><td>{html.escape(c.group)}</td>"
            f"<td>{html.escape(c.name)}</td><td>{c.weight}</td><td>{c.status}</td>"
            f"<td>{html.escape(c.evidence)}</td><td><code>{html.escape(c.fix)}</code></td></tr>"
            for c in report.checks
        )
        return (
            "<!doctype html><meta charset='utf-8'><title>sctk compliance audit</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
            ".fail{background:#fde2e2}.pass{background:#e6f4ea}</style>"
            f"<h1>Compliance audit {report.at:%Y-%m-%d %H:%M} UTC</h1>"
            f"<p>Score: <strong>{report.score:g} / 100</strong></p><table>"
            "<tr><th>group</th><th>check</th><th>weight</th><th>status</th><th>evidence</th>"
            f"<th>fix</th></tr>{rows}</table>"
        )
    raise SctkError(f"Unknown format '{fmt}'; use one of {', '.join(FORMATS)}.")


def save(settings: Settings, report: AuditReport, fmt: str) -> Path:
    """Write the report file to reports/; its path."""
    ext = {"table": "md", "md": "md", "json": "json", "html": "html"}[fmt]
    path = settings.home / "reports" / f"audit-{report.at:%Y%m%dT%H%M%S}.{ext}"
    atomic_write(path, render(report, "md" if fmt == "table" else fmt), mode=0o640)
    return path


def summary(report: AuditReport) -> tuple[str, str]:
    """(status, one line) of a report, as its history row says them."""
    failing = [c.name for c in report.checks if c.status == "fail"]
    line = f"score {report.score:g}/100" + (f"; failing: {', '.join(failing)}" if failing else "")
    return ("ok" if not failing else "warn"), line


def details(settings: Settings, report: AuditReport, path: Path) -> dict[str, Any]:
    return {**report.as_dict(), "report": path.relative_to(settings.home).as_posix()}


def record(rt: Runtime, report: AuditReport, path: Path, trigger: str = "cli") -> None:
    """Add a run of the audit made outside the scheduler to the history (the monthly task's
    runs are recorded by the task runner, in the same shape)."""
    status, line = summary(report)
    with rt.session() as s:
        s.add(
            MaintenanceRun(
                task=HISTORY_TASK,
                trigger=trigger,
                status=status,
                summary=line,
                details=details(rt.settings, report, path),
                started_at=report.at,
                finished_at=datetime.now(UTC),
            )
        )


def history(rt: Runtime, limit: int = 50) -> list[dict[str, Any]]:
    with rt.session() as s:
        rows = s.scalars(
            select(MaintenanceRun)
            .where(MaintenanceRun.task == HISTORY_TASK)
            .order_by(MaintenanceRun.id.desc())
            .limit(limit)
        )
        return [
            {
                "at": r.started_at.isoformat(),
                "score": r.details.get("score"),
                "summary": r.summary,
                "report": r.details.get("report"),
            }
            for r in rows
        ]
