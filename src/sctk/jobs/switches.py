"""Operator switches shared by every process on the database: pausing job intake or the
scheduler during an emergency. A switch is on while its row exists, so a fresh database has
every switch off, and flipping one is a single insert or delete inside the caller's transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.security import audit_log
from sctk.storage.models import ServiceFlag

JOBS_PAUSED = "jobs.paused"
SCHEDULER_PAUSED = "scheduler.paused"
SWITCHES = {JOBS_PAUSED: "job intake", SCHEDULER_PAUSED: "the scheduler"}


def _known(name: str) -> str:
    if name not in SWITCHES:
        raise SctkError(f"Unknown switch '{name}'; known: {', '.join(sorted(SWITCHES))}.")
    return name


def is_on(session: Session, name: str) -> bool:
    return session.get(ServiceFlag, _known(name)) is not None


def turn_on(session: Session, name: str, actor: str, reason: str = "") -> bool:
    """Pause what NAME names; False when it was paused already (nothing changes then)."""
    if is_on(session, name):
        return False
    session.add(ServiceFlag(name=name, actor=actor, reason=reason))
    audit_log.record(
        session, "service.paused", actor=actor, target=name, details={"reason": reason}
    )
    session.flush()
    return True


def turn_off(session: Session, name: str, actor: str) -> bool:
    """Resume what NAME names; False when it was not paused."""
    flag = session.get(ServiceFlag, _known(name))
    if flag is None:
        return False
    session.delete(flag)
    audit_log.record(session, "service.resumed", actor=actor, target=name)
    session.flush()
    return True


def active(session: Session) -> list[ServiceFlag]:
    return list(session.query(ServiceFlag).order_by(ServiceFlag.name))
