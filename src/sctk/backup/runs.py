"""The record of backup operations (`backup_runs`), each with its audit entry and bus event.

Records are written through the caller's runtime (its one engine, its bus): a run row, its
audit entry and the catalog cache commit together in one of the runtime's sessions.
Recording is best-effort where the database itself is the casualty: a backup run while the
database is gone still fails with its own reason (and is logged), it does not fail for want
of a place to write that reason down.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sctk.backup import events
from sctk.backup.dbsnapshot import database_present
from sctk.backup.location import display
from sctk.storage.engine import first_line
from sctk.storage.models import BackupRun

if TYPE_CHECKING:
    from sctk.runtime import Runtime

log = logging.getLogger(__name__)

KINDS = ("create", "verify", "prune", "copy", "restore")
STATUSES = ("running", "succeeded", "failed", "unknown")


@dataclass
class Run:
    """A run in progress: where it is recorded (RT), its row id (None when it could not be
    stored) and its clock."""

    rt: Runtime
    kind: str
    actor: str
    repository: str
    id: int | None = None
    started: float = field(default_factory=time.monotonic)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _close_orphans(session: Session) -> None:
    """Runs left 'running' by a process of this host that has died (kill -9, power loss)
    are closed as failed, so the record never shows a backup in progress forever."""
    host = socket.gethostname()
    for row in session.scalars(select(BackupRun).where(BackupRun.status == "running")):
        pid = (row.details or {}).get("pid")
        if (row.details or {}).get("host") != host or not isinstance(pid, int):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            row.status = "failed"
            row.finished_at = datetime.now(UTC)
            row.message = f"Interrupted: process {pid} ended before this {row.kind} run finished"
            row.message += "; no snapshot was committed." if row.kind == "create" else "."


def start(rt: Runtime, kind: str, actor: str, repository: str) -> Run:
    """Record that a KIND run began (status running)."""
    run = Run(rt, kind, actor, display(repository))
    if not database_present(rt.settings):
        return run
    try:
        with rt.session() as session:
            _close_orphans(session)
            row = BackupRun(
                kind=kind,
                status="running",
                started_at=datetime.now(UTC),
                repository=run.repository[:1000],
                actor=actor[:64],
                message="",
                details={"pid": os.getpid(), "host": socket.gethostname()},
            )
            session.add(row)
            session.flush()
            run.id = row.id
    except Exception as exc:  # see the module docstring
        log.debug("recording the start of a backup %s run failed", kind, exc_info=True)
        log.warning("could not record the backup %s run: %s", kind, first_line(exc))
    return run


def finish(
    run: Run,
    ok: bool,
    message: str,
    *,
    snapshot_id: str | None = None,
    details: dict[str, Any] | None = None,
    repo: Any = None,
    audit_event: str | None = None,
) -> dict[str, Any]:
    """Close RUN: its row, an audit entry, the catalog cache (from REPO), then the bus event."""
    from sctk.security import audit_log

    seconds = round(time.monotonic() - run.started, 3)
    details = dict(details or {})
    payload: dict[str, Any] = {
        "operation": run.kind,
        "run_id": run.id,
        "snapshot_id": snapshot_id,
        "repository": run.repository,
        "message": message,
        "seconds": seconds,
    }
    if not ok:
        payload["reason"] = message
    if run.id is None and not database_present(run.rt.settings):
        log.log(logging.INFO if ok else logging.ERROR, "backup %s: %s", run.kind, message)
        return payload
    try:
        with run.rt.session() as session:
            row = session.get(BackupRun, run.id) if run.id is not None else None
            if row is None:
                row = BackupRun(
                    kind=run.kind,
                    started_at=datetime.now(UTC),
                    repository=run.repository[:1000],
                    actor=run.actor[:64],
                )
                session.add(row)
            row.status = "succeeded" if ok else "failed"
            row.finished_at = datetime.now(UTC)
            row.snapshot_id = snapshot_id
            row.message = message
            row.details = details
            row.seconds = seconds
            session.flush()
            payload["run_id"] = row.id
            audit_log.record(
                session,
                audit_event or f"backup.{run.kind}",
                actor=run.actor,
                target=snapshot_id or run.repository,
                outcome="ok" if ok else "failed",
                details={
                    "run_id": row.id,
                    "message": message[:500],
                    "repository": run.repository,
                    "seconds": seconds,
                },
            )
            if repo is not None:
                from sctk.backup import catalog

                catalog.refresh(session, repo)
    except Exception as exc:  # see the module docstring
        log.debug("recording a backup %s run failed", run.kind, exc_info=True)
        if run.id is not None:  # its start was recorded: the end failing is news
            log.warning(
                "could not record the end of the backup %s run: %s", run.kind, first_line(exc)
            )
        return payload
    events.publish(run.rt, ok, payload)
    return payload


def last_runs(session: Session, limit: int = 20, kind: str | None = None) -> list[BackupRun]:
    query = select(BackupRun).order_by(BackupRun.started_at.desc(), BackupRun.id.desc())
    if kind is not None:
        query = query.where(BackupRun.kind == kind)
    return list(session.scalars(query.limit(limit)))


def as_dict(row: BackupRun) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "status": row.status,
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "snapshot_id": row.snapshot_id,
        "repository": row.repository,
        "actor": row.actor,
        "message": row.message,
        "details": row.details,
        "seconds": row.seconds,
    }


def audit_only(rt: Runtime, event: str, actor: str, target: str, details: dict) -> None:
    """An audit entry for an operation that has no run of its own (creating a repository)."""
    from sctk.security import audit_log

    if not database_present(rt.settings):
        return
    try:
        with rt.session() as session:
            audit_log.record(session, event, actor=actor, target=target, details=details)
    except Exception as exc:  # see the module docstring
        log.warning("could not audit %s: %s", event, first_line(exc))


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def reconcile(session: Session, snapshots: list[Any], repository: str) -> dict[str, int]:
    """Make the run records of a restored database agree with the repository, which is the
    truth about which snapshots exist. The restored database is a copy taken while a backup
    ran: that run shows `running` there, and the runs after it are missing. Each regular
    snapshot without a succeeded create run gets one (the run that was `running` when it was
    taken, else a rebuilt record); runs still `running` end as failed (a create with no
    snapshot) or unknown (their outcome was never written to this copy).
    {"completed", "rebuilt", "failed", "unknown"}."""
    from sctk.backup import kinds

    counts = dict.fromkeys(("completed", "rebuilt", "failed", "unknown"), 0)
    rows = list(session.scalars(select(BackupRun)))
    done = {r.snapshot_id for r in rows if r.kind == "create" and r.status == "succeeded"}
    running = sorted(
        (r for r in rows if r.kind == "create" and r.status == "running"),
        key=lambda r: _aware(r.started_at),
    )
    for snap in kinds.regular(snapshots):
        if snap.id in done:
            continue
        took = [r for r in running if _aware(r.started_at) <= snap.time]
        if took:
            row = took[-1]
            running.remove(row)
            counts["completed"] += 1
        else:
            row = BackupRun(
                kind="create",
                started_at=snap.time,
                repository=repository[:1000],
                actor="reconcile",
                details={},
            )
            session.add(row)
            counts["rebuilt"] += 1
        row.status = "succeeded"
        row.finished_at = snap.time
        row.snapshot_id = snap.id
        row.message = (
            f"Snapshot {snap.id[:8]} ({snap.label}): {snap.files} files, {snap.size} bytes; "
            "this record was rebuilt from the repository after a restore."
        )
        row.details = {
            **(row.details or {}),
            "label": snap.label,
            "files": snap.files,
            "size": snap.size,
            "added_bytes": snap.added_bytes,
            "reconciled": True,
        }
    now = datetime.now(UTC)
    for row in session.scalars(select(BackupRun).where(BackupRun.status == "running")):
        row.finished_at = now
        if row.kind == "create":
            row.status = "failed"
            row.message = (
                "No snapshot of this run is in the repository: it ended before committing one "
                "(found running in a restored database)."
            )
            counts["failed"] += 1
        else:
            row.status = "unknown"
            row.message = (
                f"The outcome of this {row.kind} run was never recorded here: the database was "
                "restored from a snapshot taken while it ran."
            )
            counts["unknown"] += 1
    session.flush()
    return counts
