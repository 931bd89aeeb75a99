"""The `backup` health check: is there a recent regular backup, and did its last verification
pass? Read from the run records only (opening the repository would cost a key derivation on
every probe).

OK: the last successful regular backup is younger than backup.max_age_warning_hours (26 h).
WARNING: older, or none at all once the installation is older than that (a directory made an
hour ago has not missed its first nightly backup yet), or backups are not configured.
CRITICAL: older than backup.max_age_critical_hours (72 h), or the last verification failed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sctk.health.registry import CheckContext, CheckOutcome, Status, check, connectivity_probe


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _repository_created(settings) -> datetime | None:
    """When the local repository was made (its config file is plain JSON: no key needed)."""
    from sctk.backup.location import local_path, repo_url

    path = local_path(repo_url(settings))
    try:
        created = json.loads((path / "config").read_text(encoding="utf-8"))["created"]
        return _aware(datetime.fromisoformat(created))
    except (TypeError, OSError, ValueError, KeyError):
        return None


def _installed_at(session: Session, settings) -> datetime | None:
    """The earliest sign of this installation's life: its repository, audit log or runs."""
    from sctk.storage.models import AuditEntry, BackupRun

    seen = [
        _repository_created(settings),
        session.scalar(select(func.min(AuditEntry.at))),
        session.scalar(select(func.min(BackupRun.started_at))),
    ]
    seen = [_aware(t) for t in seen if t is not None]
    return min(seen) if seen else None


@check(
    "backup",
    "A regular backup within backup.max_age_warning_hours; the last verification passed.",
    depends_on=("database",),
)
def backup(ctx: CheckContext) -> CheckOutcome:
    from sctk.backup import kinds
    from sctk.backup.passphrase import configuration_problem
    from sctk.storage.models import BackupRun

    settings = ctx.settings
    problem = configuration_problem(settings)
    if problem is not None:
        return CheckOutcome(
            "backup", Status.WARNING, f"{problem} No backup is being taken.", {"configured": False}
        )
    warn_h, crit_h = settings.backup.max_age_warning_hours, settings.backup.max_age_critical_hours
    now = datetime.now(UTC)
    with Session(ctx.engine) as session:
        created = session.scalars(
            select(BackupRun)
            .where(BackupRun.kind == "create", BackupRun.status == "succeeded")
            .order_by(BackupRun.finished_at.desc())
            .limit(50)
        )
        last = next(
            (
                r
                for r in created
                if kinds.kind_of_label(str((r.details or {}).get("label", ""))) == kinds.REGULAR
            ),
            None,
        )
        verify = session.scalars(
            select(BackupRun)
            .where(BackupRun.kind == "verify", BackupRun.status.in_(("succeeded", "failed")))
            .order_by(BackupRun.finished_at.desc())
            .limit(1)
        ).first()
        installed = _installed_at(session, settings) if last is None else None
    values: dict = {"configured": True, "warning_hours": warn_h, "critical_hours": crit_h}
    if verify is not None:
        values["last_verify"] = verify.status
        if verify.status == "failed":
            return CheckOutcome(
                "backup",
                Status.CRITICAL,
                f"the last backup verification ({_aware(verify.finished_at):%Y-%m-%d %H:%M} UTC) "
                f"failed: {verify.message} Repair or replace the backup, then run "
                "'sctk backup verify --latest --read-data'.",
                values,
            )
    if last is None:
        age = (now - installed).total_seconds() / 3600 if installed else 0.0
        values["last_backup_at"] = None
        status = Status.WARNING if age > warn_h else Status.OK
        when = "" if status is Status.WARNING else f" (the first is due within {warn_h:g} h)"
        return CheckOutcome(
            "backup",
            status,
            f"no backup has been taken yet{when}; the daily maintenance takes one, or run "
            "'sctk backup create'",
            values,
        )
    at = _aware(last.finished_at or last.started_at)
    hours = (now - at).total_seconds() / 3600
    values |= {"last_backup_at": at.isoformat(), "age_hours": round(hours, 2)}
    values["snapshot_id"] = last.snapshot_id
    said = f"the last backup (snapshot {(last.snapshot_id or '')[:8]}) is {hours:.1f} h old"
    if hours > crit_h:
        return CheckOutcome(
            "backup", Status.CRITICAL, f"{said}, over {crit_h:g} h; {_fix()}", values
        )
    if hours > warn_h:
        return CheckOutcome(
            "backup", Status.WARNING, f"{said}, over {warn_h:g} h; {_fix()}", values
        )
    return CheckOutcome("backup", Status.OK, said, values)


def _fix() -> str:
    return (
        "check the daily maintenance ('sctk maintenance history') and take one with "
        "'sctk backup create'"
    )


@connectivity_probe("backup repository")
def remote_repository(settings) -> dict | None:
    """The connectivity check's look at a remote repository (None for a local one)."""
    from sctk.backup.location import probe_remote

    return probe_remote(settings)
