"""Ending every login session at once: a not-before time kept in the database.

Login JWTs are stateless, so ending them all takes a moment before which no JWT counts. It
lives in the database (a row of service_flags), not in a process: every API process sharing
the database refuses the old JWTs, each within security.auth_cache_seconds (the time it may
trust a credential it verified already). Personal API tokens are not sessions; they are
revoked one by one.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from sctk.security import audit_log
from sctk.storage.models import ServiceFlag, utcnow

NOT_BEFORE = "sessions.not_before"  # the row's set_at is the moment
SESSIONS_REVOKED = "sessions.revoked"


def not_before(session: Session) -> datetime | None:
    """The moment before which no login JWT counts, or None when sessions were never ended."""
    row = session.get(ServiceFlag, NOT_BEFORE)
    return None if row is None else row.set_at


def revoke_all(session: Session, actor: str, reason: str = "") -> datetime:
    """End every login session issued until now (inside the caller's transaction)."""
    now = utcnow()
    row = session.get(ServiceFlag, NOT_BEFORE)
    if row is None:
        session.add(ServiceFlag(name=NOT_BEFORE, actor=actor, reason=reason, set_at=now))
    else:
        row.set_at, row.actor, row.reason = now, actor, reason
    audit_log.record(
        session, SESSIONS_REVOKED, actor=actor, target="sessions", details={"reason": reason}
    )
    session.flush()
    return now
