"""The tamper-evident audit log: an append-only chain of SHA-256 linked entries.

Each entry's `hash` is SHA-256 over the previous entry's hash followed by a canonical
serialisation of the entry's content (seq included), and `seq` runs 1, 2, 3, ... without gaps.
An entry changed in place no longer matches its own hash; a deleted entry leaves a gap in
`seq`; an entry inserted between two others (with renumbered seqs and a hash of its own) is
exposed because the entry after it still links to the one before it. `verify` names the
first such broken link.

Limits, by construction of a keyless chain kept in the same database:

- Removing the newest entries (the tail) leaves a shorter chain that is still intact; so
  does rewriting every entry from some point onwards with recomputed hashes. Only a copy of
  the head kept elsewhere exposes these: `verify` reports the head (seq and hash), and
  `verify(session, anchor=(seq, hash))` checks that a head noted earlier is still there.
- A new entry appended with a correct hash is indistinguishable from a genuine one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.storage.models import AuditEntry

GENESIS_HASH = "0" * 64
"""The `prev_hash` of the first entry."""

LOGIN_OK = "login.ok"
LOGIN_FAILED = "login.failed"
USER_LOCKED = "user.locked"
USER_UNLOCKED = "user.unlocked"
USER_CREATED = "user.created"
USER_DISABLED = "user.disabled"
USER_ENABLED = "user.enabled"
USER_ROLE_CHANGED = "user.role_changed"
USER_PASSWORD_RESET = "user.password_reset"
TOKEN_CREATED = "token.created"
TOKEN_REVOKED = "token.revoked"
KEY_ROTATION_STARTED = "key.rotation_started"
KEY_ROTATED = "key.rotated"
PERMISSION_DENIED = "permission.denied"
CONFIG_CHANGED = "config.changed"
BACKUP_CREATED = "backup.created"
RESTORE_COMPLETED = "restore.completed"
UPGRADE_APPLIED = "upgrade.applied"

EVENTS: tuple[str, ...] = (
    LOGIN_OK,
    LOGIN_FAILED,
    USER_LOCKED,
    USER_UNLOCKED,
    USER_CREATED,
    USER_DISABLED,
    USER_ENABLED,
    USER_ROLE_CHANGED,
    USER_PASSWORD_RESET,
    TOKEN_CREATED,
    TOKEN_REVOKED,
    KEY_ROTATION_STARTED,
    KEY_ROTATED,
    PERMISSION_DENIED,
    CONFIG_CHANGED,
    BACKUP_CREATED,
    RESTORE_COMPLETED,
    UPGRADE_APPLIED,
)
"""The events sctk records; any other name of the same shape is accepted too."""

EVENT_RE = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
_EVENT_FILTER_RE = re.compile(r"^[a-z_]+(\.[a-z_]+)*$")
_OUTCOME_RE = re.compile(r"^[a-z_]{1,16}$")

# Column widths of the audit_log table: free text is cut to fit *before* hashing, so that the
# hash always covers exactly what the database keeps (PostgreSQL would refuse a longer value
# and fail the caller's whole transaction; SQLite would keep it).
_ACTOR_MAX, _TARGET_MAX, _CLIENT_MAX, _EVENT_MAX = 64, 200, 64, 64

# One fixed key for pg_advisory_xact_lock: every appender serialises on it.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"sctk.audit_log").digest()[:8], "big", signed=True)


def _canonical_time(at: datetime) -> str:
    """UTC with microseconds, the precision both SQLite (as text) and PostgreSQL keep."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _canonical_json(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def compute_hash(
    prev_hash: str,
    *,
    seq: int,
    at: datetime,
    event: str,
    actor: str,
    target: str,
    client: str,
    outcome: str,
    details: dict[str, Any],
) -> str:
    """SHA-256 (hex) over PREV_HASH followed by the canonical JSON of an entry's content."""
    content = {
        "seq": seq,
        "at": _canonical_time(at),
        "event": event,
        "actor": actor,
        "target": target,
        "client": client,
        "outcome": outcome,
        "details": details,
    }
    return hashlib.sha256((prev_hash + _canonical_json(content)).encode("utf-8")).hexdigest()


def entry_hash(entry: Any) -> str:
    """Recompute the hash an entry (ORM object or row with the same fields) should carry."""
    return compute_hash(
        entry.prev_hash,
        seq=entry.seq,
        at=entry.at,
        event=entry.event,
        actor=entry.actor,
        target=entry.target,
        client=entry.client,
        outcome=entry.outcome,
        details=entry.details,
    )


def _lock_chain(session: Session) -> None:
    """Serialise appenders for the rest of the caller's transaction, before the head is read."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    else:
        # A write that changes nothing still makes SQLite take the database's write lock
        # (waiting up to busy_timeout), so no other appender can commit a new head until
        # this transaction ends. A plain SELECT first would read a head that may be stale.
        # This relies on the driver's default of beginning the transaction at its first
        # write, so the lock is taken on a fresh snapshot (engine.py keeps that default).
        session.execute(text("UPDATE audit_log SET seq = seq WHERE 1 = 0"))


def _normalised_details(details: dict[str, Any] | None) -> dict[str, Any]:
    if details is None:
        return {}
    if not isinstance(details, dict):
        raise SctkError(f"Audit details must be a dict, not {type(details).__name__}.")
    try:
        # A JSON round trip gives exactly what the database will hand back (str keys, lists
        # for tuples), so the hash computed now still matches after reading the row back.
        return json.loads(_canonical_json(details))
    except (TypeError, ValueError) as exc:
        raise SctkError(
            f"Audit details must be plain JSON (str, number, list, dict): {exc}."
        ) from None


def record(
    session: Session,
    event: str,
    *,
    actor: str = "system",
    target: str = "",
    client: str = "",
    outcome: str = "ok",
    details: dict | None = None,
) -> AuditEntry:
    """Append one entry to the chain inside the caller's transaction; the caller commits.

    Concurrent appenders wait on a lock held until their transaction ends, so the chain never
    forks and seq never repeats. Actor, target and client are cut to their column widths.
    """
    if not isinstance(event, str) or len(event) > _EVENT_MAX or not EVENT_RE.match(event):
        raise SctkError(
            f"Audit event {event!r} is not a valid name; use lower-case dotted words such as "
            "'login.failed' (at most 64 characters)."
        )
    if not isinstance(outcome, str) or not _OUTCOME_RE.match(outcome):
        raise SctkError(
            f"Audit outcome {outcome!r} is not valid; use a short lower-case word such as "
            "'ok', 'denied' or 'failed'."
        )
    content: dict[str, Any] = {
        "event": event,
        "actor": str(actor)[:_ACTOR_MAX],
        "target": str(target)[:_TARGET_MAX],
        "client": str(client)[:_CLIENT_MAX],
        "outcome": outcome,
        "details": _normalised_details(details),
    }
    _lock_chain(session)
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (head.seq + 1, head.hash) if head else (1, GENESIS_HASH)
    at = datetime.now(UTC)  # taken under the lock, so time order follows seq order
    entry = AuditEntry(
        seq=seq,
        at=at,
        prev_hash=prev_hash,
        hash=compute_hash(prev_hash, seq=seq, at=at, **content),
        **content,
    )
    session.add(entry)
    session.flush()
    return entry


def entries(
    session: Session,
    since: datetime | None = None,
    user: str | None = None,
    event: str | None = None,
    limit: int = 1000,
) -> list[AuditEntry]:
    """Entries newest first: at or after SINCE, by or about USER (actor or target), of EVENT.

    EVENT is an exact name ('login.failed') or a dotted prefix ('login' matches login.*).
    """
    if limit < 1:
        raise SctkError(f"The limit must be a positive number of entries, not {limit}.")
    query = select(AuditEntry)
    if since is not None:
        if since.tzinfo is None:
            raise SctkError("The 'since' time must carry a timezone; sctk keeps times in UTC.")
        query = query.where(AuditEntry.at >= since)
    if user:
        query = query.where(or_(AuditEntry.actor == user, AuditEntry.target == user))
    if event:
        if not _EVENT_FILTER_RE.match(event):
            raise SctkError(
                f"{event!r} is not an event name; give one such as 'login.failed' or a prefix "
                "such as 'login'."
            )
        query = query.where(
            or_(
                AuditEntry.event == event, AuditEntry.event.startswith(event + ".", autoescape=True)
            )
        )
    return list(session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit)))


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    """The JSON form of an entry, shared by `sctk audit-log list --json` and the API."""
    return {
        "seq": entry.seq,
        "at": entry.at.isoformat(),
        "event": entry.event,
        "actor": entry.actor,
        "target": entry.target,
        "client": entry.client,
        "outcome": entry.outcome,
        "details": entry.details,
        "hash": entry.hash,
    }


_DURATION_RE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """A point in time from an ISO date/time (UTC unless it says otherwise) or a duration ago.

    Durations are a whole number and a unit: 90s, 30m, 24h, 7d, 2w.
    """
    match = _DURATION_RE.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise SctkError(
            f"since {value!r} is neither an ISO date nor a duration; give a date such as "
            "2026-01-31 or 2026-01-31T08:00Z, or a duration such as 30m, 24h or 7d."
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass
class VerifyReport:
    """The outcome of walking the chain: intact with its head, or the first broken link.

    When broken, head_seq/head_hash are those of the last entry that checked out.
    """

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None

    @property
    def summary(self) -> str:
        if not self.ok:
            return f"audit log broken: {self.problem}"
        if self.checked == 0:
            return "audit log is empty; nothing to verify."
        return (
            f"audit log intact: {self.checked} entries checked, head seq {self.head_seq} "
            f"hash {self.head_hash}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "broken_seq": self.broken_seq,
            "problem": self.problem,
            "summary": self.summary,
        }


def _missing(first: int, last: int) -> str:
    return (
        f"entry seq {first} is missing"
        if first == last
        else (f"entries seq {first} to {last} are missing")
    )


def verify(session: Session, anchor: tuple[int, str] | None = None) -> VerifyReport:
    """Walk the chain in seq order, recomputing every hash; report the first broken link.

    ANCHOR is a (seq, hash) head noted earlier, e.g. from a previous report: the chain must
    still hold that entry with that hash, which exposes a removed tail or a rewritten chain.
    """
    table = AuditEntry.__table__
    rows = session.execute(select(table).order_by(table.c.seq, table.c.id)).yield_per(1000)
    checked, prev_seq, prev_hash = 0, 0, GENESIS_HASH

    def broken(seq: int, problem: str) -> VerifyReport:
        return VerifyReport(False, checked, prev_seq, prev_hash, broken_seq=seq, problem=problem)

    for row in rows:
        seq = row.seq
        if seq <= prev_seq or seq < 1:
            what = (
                f"appears twice (id {row.id} is the second): a row was inserted with a "
                "duplicate seq."
                if seq == prev_seq and seq >= 1
                else f"(id {row.id}) is out of place: the chain starts at seq 1 and rises by "
                "one, so a row was inserted with a made-up seq."
            )
            return broken(seq, f"entry seq {seq} {what}")
        if seq > prev_seq + 1:
            where = (
                f"the chain starts at seq {seq}"
                if prev_seq == 0
                else f"the chain jumps from seq {prev_seq} to {seq}"
            )
            return broken(prev_seq + 1, f"{_missing(prev_seq + 1, seq - 1)}: {where}.")
        if row.prev_hash != prev_hash or entry_hash(row) != row.hash:
            return broken(*_first_break(session, row, prev_hash))
        checked, prev_seq, prev_hash = checked + 1, seq, row.hash
        if anchor is not None and seq == anchor[0] and row.hash != anchor[1]:
            return broken(
                seq,
                (
                    f"entry seq {seq} no longer has the hash noted for it earlier: the chain was "
                    f"rewritten from seq {seq} or an earlier entry onwards."
                ),
            )
    if anchor is not None and prev_seq < anchor[0]:
        return broken(
            prev_seq + 1,
            (
                f"{_missing(prev_seq + 1, anchor[0])}: the chain ends at seq {prev_seq}, but seq "
                f"{anchor[0]} was noted earlier as its head."
            ),
        )
    return VerifyReport(True, checked, prev_seq, prev_hash)


def _first_break(session: Session, row: Any, expected_prev: str) -> tuple[int, str]:
    """Name what broke at ROW: a modified row, rows inserted before it, or a rewritten one."""
    seq = row.seq
    own_ok = entry_hash(row) == row.hash
    linked_seq = None
    if row.prev_hash != expected_prev:
        linked_seq = session.scalar(
            select(AuditEntry.seq).where(AuditEntry.hash == row.prev_hash).limit(1)
        )
        # Still linking to an older, intact entry: whatever sits between was slipped in
        # (later rows renumbered to make room, so their own hashes fail too).
        if linked_seq is not None and linked_seq < seq - 1:
            first, last = linked_seq + 1, seq - 1
            forged = (
                f"entry seq {first} was inserted"
                if first == last
                else f"entries seq {first} to {last} were inserted"
            )
            return first, f"{forged}: entry seq {seq} still links to seq {linked_seq}."
    if not own_ok:
        gone = (
            ", and the entry it linked back to is no longer in the log"
            if row.prev_hash != expected_prev and linked_seq is None
            else ""
        )
        return seq, f"entry seq {seq} was modified: its content no longer matches its hash{gone}."
    if seq == 1:
        return 1, ("entry seq 1 does not start the chain: its prev_hash is not the genesis value.")
    return seq - 1, (
        f"entry seq {seq - 1} was replaced or rewritten: its hash changed, so entry seq {seq} "
        "no longer links to it."
    )
