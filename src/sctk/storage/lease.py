"""Leases: at most one live holder of a named role (the scheduler) per database.

A holder renews its lease well within the time to live; a holder that dies stops renewing and
another process takes the role once the lease has expired. Taking and renewing are single
conditional statements, so two processes racing for a free lease cannot both win.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sctk.storage.models import Lease

LEASE_NAMES = {"scheduler": "scheduler"}  # the roles that hold one


def _now() -> datetime:
    return datetime.now(UTC)


def acquire(session: Session, name: str, holder: str, ttl_seconds: float) -> bool:
    """Take or renew lease NAME for HOLDER; True when HOLDER holds it afterwards.

    Commits: a lease must be visible to the other contenders at once.
    """
    now = _now()
    expires = now + timedelta(seconds=ttl_seconds)
    taken = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, Lease.expires_at < now))
        .values(holder=holder, renewed_at=now, expires_at=expires)
        .execution_options(synchronize_session=False)
    ).rowcount
    if taken:
        session.commit()
        return True
    if session.get(Lease, name) is not None:
        session.rollback()
        return False
    try:
        session.add(
            Lease(name=name, holder=holder, acquired_at=now, renewed_at=now, expires_at=expires)
        )
        session.commit()
    except IntegrityError:  # another contender inserted it first
        session.rollback()
        return False
    return True


def release(session: Session, name: str, holder: str) -> None:
    """Give lease NAME up at once (on a clean stop) so the next holder need not wait."""
    session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=_now() - timedelta(seconds=1))
        .execution_options(synchronize_session=False)
    )
    session.commit()


def current(session: Session, name: str) -> Lease | None:
    """The lease row NAME if its holder is live (not expired), else None."""
    lease = session.get(Lease, name)
    if lease is None or lease.expires_at < _now():
        return None
    return lease
