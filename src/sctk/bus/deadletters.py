"""Dead letters: messages a handler kept failing on. List them, replay them, purge them.

A replay publishes the stored message again, addressed to the one handler that failed (its
target is the handler's name), so the handlers that did take it do not see it twice. It
gets a new id and is signed with the current key: the target is part of what is signed, and
the key that signed the original may have been retired since. On PostgreSQL the replay
reaches that handler in every listening process; on SQLite only in the process replaying it,
so there a replay is refused when that process does not run the handler.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sctk.bus.bus import Bus
from sctk.bus.envelope import InvalidEnvelope, check_fields, sign, verify
from sctk.errors import NotFound, SctkError
from sctk.security import audit_log
from sctk.storage.models import DeadLetter, utcnow

ALL = "all"
_AGE_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Replayed:
    dead_letter_id: int
    handler: str
    type: str
    message_id: str  # the id of the message published by the replay


def parse_age(value: str) -> timedelta:
    """'90s', '30m', '24h', '7d', '2w' -> a timedelta."""
    match = _AGE_RE.match(value)
    if not match:
        raise SctkError(
            f"Invalid age '{value[:32]}'; use a whole number and a unit such as 30m, 24h, 7d or 2w."
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def list_dead(session: Session, *, pending_only: bool = False) -> list[DeadLetter]:
    """Every dead letter (or only those not yet replayed), oldest first."""
    query = select(DeadLetter).order_by(DeadLetter.id)
    if pending_only:
        query = query.where(DeadLetter.replayed_at.is_(None))
    return list(session.scalars(query))


def get(session: Session, dead_letter_id: int) -> DeadLetter:
    found = session.get(DeadLetter, dead_letter_id)
    if found is None:
        raise NotFound(
            f"No dead letter {dead_letter_id}; 'sctk bus dead-letters list' shows the ids."
        )
    return found


def _check_replayable(bus: Bus, dead: DeadLetter) -> None:
    if dead.replayed_at is not None:
        raise SctkError(
            f"Dead letter {dead.id} was already replayed at "
            f"{dead.replayed_at.isoformat(timespec='seconds')}; if it failed again, the new "
            "failure is a dead letter of its own."
        )
    if not bus.cross_process and not bus.has_subscriber(dead.handler):
        raise SctkError(
            f"Dead letter {dead.id} is for handler '{dead.handler}', which does not run in this "
            "process, and on SQLite the bus reaches only the handlers of the process that "
            "publishes; replay it from a process that runs that handler, or purge it."
        )
    try:
        stored = check_fields(dead.envelope)
        bus.keyring.bus_key(stored["kid"])
    except InvalidEnvelope as exc:
        raise SctkError(
            f"Dead letter {dead.id} cannot be replayed: its stored message is malformed "
            f"({exc.reason}); purge it."
        ) from None
    except SctkError:
        return  # signed by a key retired since: the replay re-signs it with the current key
    try:
        verify(bus.keyring, stored)
    except InvalidEnvelope as exc:
        # re-signing an altered message would launder it
        raise SctkError(
            f"Dead letter {dead.id} cannot be replayed: its stored message fails verification "
            f"({exc.reason}); purge it."
        ) from None


def replay(
    session: Session, bus: Bus, which: int | str, *, actor: str = "system"
) -> list[Replayed]:
    """Publish dead letter WHICH (an id, or 'all' that are not yet replayed) again to its
    handler and mark it replayed (audited). Every one is checked before any is published."""
    if which == ALL:
        targets = list_dead(session, pending_only=True)
    elif isinstance(which, int) and not isinstance(which, bool):
        targets = [get(session, which)]
    else:
        raise SctkError(f"Replay takes a dead letter id or '{ALL}', not {str(which)[:40]!r}.")
    for dead in targets:
        _check_replayable(bus, dead)
    done = []
    for dead in targets:
        original: dict[str, Any] = dead.envelope
        envelope = sign(
            bus.keyring,
            original["type"],
            original["payload"],
            source=original["source"],
            target=dead.handler,
        )
        bus.publish(envelope)
        dead.replayed_at = utcnow()
        audit_log.record(
            session,
            "bus.dead_letter.replayed",
            actor=actor,
            target=str(dead.id),
            details={"handler": dead.handler, "type": dead.type, "message_id": envelope.id},
        )
        session.flush()
        done.append(Replayed(dead.id, dead.handler, dead.type, envelope.id))
    return done


def purge(session: Session, older_than: timedelta | None = None, *, actor: str = "system") -> int:
    """Delete dead letters created more than OLDER_THAN ago (None: all); returns how many."""
    query = delete(DeadLetter)
    if older_than is not None:
        query = query.where(DeadLetter.created_at < utcnow() - older_than)
    count = session.execute(query).rowcount or 0
    if count:
        audit_log.record(
            session,
            "bus.dead_letter.purged",
            actor=actor,
            details={
                "count": count,
                "older_than_seconds": None if older_than is None else older_than.total_seconds(),
            },
        )
    return count


def as_dict(dead: DeadLetter) -> dict[str, Any]:
    return {
        "id": dead.id,
        "message_id": dead.message_id,
        "type": dead.type,
        "handler": dead.handler,
        "attempts": dead.attempts,
        "last_error": dead.last_error,
        "created_at": dead.created_at.isoformat(),
        "replayed_at": dead.replayed_at.isoformat() if dead.replayed_at else None,
        "envelope": dead.envelope,
    }
