"""The catalog of snapshots. The repository is the truth; the database keeps a cache of it.

`list_snapshots(repo)` reads the repository alone, so backups stay listable (and restorable)
when the database is lost. `refresh(session, repo)` mirrors that list into `backup_snapshots`,
which the API reads without opening the repository; create, list, prune and verify refresh it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sctk.backup import kinds
from sctk.backup.dbsnapshot import database_present
from sctk.backup.location import display
from sctk.errors import NotFound, SctkError
from sctk.storage.engine import first_line
from sctk.storage.models import BackupSnapshot

if TYPE_CHECKING:
    from sctk.runtime import Runtime

log = logging.getLogger(__name__)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# The cache keeps a snapshot's verdict beside its manifest under this key (no schema change);
# cached_dict lifts it out again.
VERDICT_KEY = "_verdict"


def snapshot_dict(
    info: Any,
    verified_at: datetime | None = None,
    status: str = kinds.UNVERIFIED,
    problems: list[str] | None = None,
) -> dict[str, Any]:
    """A SnapshotInfo (from the repository) as JSON-able data."""
    return {
        "id": info.id,
        "short_id": info.id[:8],
        "time": _iso(info.time),
        "label": info.label,
        "kind": kinds.kind_of(info),
        "status": status,
        "problems": list(problems or []),
        "host": info.host,
        "files": info.files,
        "size": info.size,
        "added_bytes": info.added_bytes,
        "verified_at": _iso(verified_at),
        "manifest": info.manifest,
    }


def cached_dict(row: BackupSnapshot) -> dict[str, Any]:
    """A cached snapshot as JSON-able data (the same keys as snapshot_dict, plus repository)."""
    manifest = dict(row.manifest or {})
    verdict = manifest.pop(VERDICT_KEY, None) or {}
    return {
        "id": row.id,
        "short_id": row.id[:8],
        "time": _iso(row.time),
        "label": row.label,
        "kind": kinds.kind_of(row),
        "status": verdict.get("status", kinds.VERIFIED if row.verified_at else kinds.UNVERIFIED),
        "problems": list(verdict.get("problems") or []),
        "host": row.host,
        "files": row.files,
        "size": row.size,
        "added_bytes": row.added_bytes,
        "verified_at": _iso(row.verified_at),
        "manifest": manifest,
        "repository": row.repository,
    }


def _verdicts(repo: Any) -> dict[str, tuple[str, datetime, list[str]]]:
    return {
        sid: (status, when, kinds.problems_of(report))
        for sid, (status, when, report) in kinds.statuses(repo).items()
    }


def list_snapshots(repo: Any) -> list[dict[str, Any]]:
    """Every snapshot in REPO, oldest first, with its kind, status and last verification."""
    verdicts = _verdicts(repo)
    out = []
    for s in repo.snapshots():
        status, when, problems = verdicts.get(s.id, (kinds.UNVERIFIED, None, []))
        out.append(snapshot_dict(s, when, status, problems))
    return out


def refresh(session: Session, repo: Any) -> int:
    """Make backup_snapshots mirror REPO; the number of snapshots cached."""
    snapshots = repo.snapshots()
    verdicts = _verdicts(repo)
    where = display(repo.url)[:1000]
    now = datetime.now(UTC)
    ids = {s.id for s in snapshots}
    # the cache describes one repository: rows of another (backup.repository changed) go too
    existing = {row.id: row for row in session.scalars(select(BackupSnapshot))}
    stale = [i for i, row in existing.items() if i not in ids or row.repository != where]
    if stale:
        session.execute(delete(BackupSnapshot).where(BackupSnapshot.id.in_(stale)))
        for i in stale:
            existing.pop(i, None)
    for info in snapshots:
        row = existing.get(info.id)
        if row is None:
            row = BackupSnapshot(id=info.id)
            session.add(row)
        row.time = info.time
        row.label = info.label[:32]
        row.host = (info.host or "")[:255]
        row.files = info.files
        row.size = info.size
        row.added_bytes = info.added_bytes
        status, when, problems = verdicts.get(info.id, (kinds.UNVERIFIED, None, []))
        row.manifest = {**info.manifest, VERDICT_KEY: {"status": status, "problems": problems}}
        row.repository = where
        row.verified_at = when
        row.refreshed_at = now
    session.flush()
    return len(snapshots)


def try_refresh(rt: Runtime, repo: Any) -> str | None:
    """refresh() in a transaction of its own; None, or why the database could not take it."""
    if not database_present(rt.settings):
        return "the database file is missing"
    try:
        with rt.session() as session:
            refresh(session, repo)
        return None
    except Exception as exc:  # the repository answered; the cache can wait
        log.debug("refreshing the backup catalog cache failed", exc_info=True)
        return first_line(exc)


def cached(session: Session) -> list[BackupSnapshot]:
    """The cached snapshots, newest first."""
    return list(session.scalars(select(BackupSnapshot).order_by(BackupSnapshot.time.desc())))


def check_ref(ref: str) -> str:
    """A snapshot reference as typed: 'latest' or 4 to 64 hex digits."""
    ref = ref.strip().lower()
    if ref == "latest":
        return ref
    if not 4 <= len(ref) <= 64 or any(c not in "0123456789abcdef" for c in ref):
        raise SctkError(
            f"'{ref[:70]}' is not a snapshot id; give 'latest' or at least 4 hex digits of one "
            "('sctk backup list' shows them)."
        )
    return ref


def cached_one(session: Session, ref: str, include_safety: bool = False) -> BackupSnapshot:
    """The cached snapshot REF names (full id, unique prefix or 'latest': the newest regular
    one unless INCLUDE_SAFETY); NotFound if none."""
    ref = check_ref(ref)
    if ref == "latest":
        rows = [r for r in cached(session) if include_safety or kinds.kind_of(r) == kinds.REGULAR]
        rows = rows[:1]
    else:
        rows = list(
            session.scalars(
                select(BackupSnapshot).where(BackupSnapshot.id.like(f"{ref}%")).limit(2)
            )
        )
    if len(rows) > 1:
        raise SctkError(f"The snapshot id prefix '{ref}' is ambiguous; give more of its digits.")
    if not rows:
        raise NotFound(
            f"Snapshot '{ref}' is not in the backup catalog; 'sctk backup list' (or GET "
            "/api/v1/backups) shows the snapshots there are."
        )
    return rows[0]
