"""Key rotation: add a key, re-encrypt every stored value, then retire the old keys.

The order is what makes a rotation safe to kill at any instant:

1. the new key is added to the ring file and the rotation is marked in progress there
   (one atomic write): from now on every new value is encrypted with the new key, and the
   old keys are still in the file;
2. the values still under an old key are re-encrypted in small committed batches; each row
   is switched by compare-and-set, so it is always either old key + old token or new key +
   new token;
3. only when, under the table's write lock, no row references an old key, are the old keys
   removed from the ring (a second atomic write).

A rotation interrupted anywhere leaves a ring that decrypts every row, and the mark in the
file makes the next `rotate` resume it instead of adding yet another key. A flock on
keys/keyring.lock keeps two rotations from running at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.orm import Session

from sctk import crashpoints
from sctk.config import Settings
from sctk.errors import SctkError
from sctk.security import audit_log, sessions
from sctk.security.keyring import Keyring, ring_lock
from sctk.security.secrets import hold_write_lock
from sctk.storage.engine import session_scope
from sctk.storage.layout import require_data_dir
from sctk.storage.models.security import Secret

if TYPE_CHECKING:  # a type only: the runtime itself reads the keyring from this package
    from sctk.runtime import Runtime

DEFAULT_BATCH = 100
MISSING = "missing"  # a key id that rows reference but the ring does not hold
BUSY = "A key rotation is already running; wait for it to finish, then check 'sctk keys status'."

Progress = Callable[[int, int], None]


@dataclass
class RotationReport:
    """What one `rotate` run did."""

    new_key_id: int
    reencrypted: int
    retired_key_ids: list[int] = field(default_factory=list)
    resumed: bool = False  # True when this run finished a rotation an earlier run started
    sessions_revoked: bool = False  # every login JWT ended; otherwise they run until expiry


@dataclass
class KeyStatus:
    """One key as `sctk keys status` shows it."""

    id: int
    created_at: datetime | None
    age: timedelta | None
    state: str  # active, retiring, or missing (rows use it but the ring lacks it)
    values: int

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "age_seconds": int(self.age.total_seconds()) if self.age is not None else None,
            "state": self.state,
            "values": self.values,
        }


def _audit(session: Session, event: str, actor: str, details: dict) -> None:
    audit_log.record(session, event, actor=actor, target="keyring", details=details)


def _counts(engine: Engine) -> dict[int, int]:
    with session_scope(engine) as s:
        rows = s.execute(select(Secret.key_id, func.count()).group_by(Secret.key_id))
        return {key_id: n for key_id, n in rows}


def _preflight(engine: Engine, ring: Keyring) -> None:
    """Refuse to start when some value could not be re-encrypted: change nothing then."""
    held = {k.id for k in ring.keys}
    counts = _counts(engine)
    missing = sorted(k for k in counts if k not in held)
    if missing:
        n = sum(counts[k] for k in missing)
        raise SctkError(
            f"{n} stored value(s) are encrypted with key(s) {', '.join(map(str, missing))}, "
            f"which {ring.path} does not hold; restore the keyring saved with the database "
            "before rotating."
        )
    with session_scope(engine) as s:
        for key_id in counts:
            row = s.execute(
                select(Secret.name, Secret.ciphertext).where(Secret.key_id == key_id).limit(1)
            ).one()
            ring.decrypt(key_id, row.ciphertext, label=f"Secret {row.name!r}")


def _reencrypt(
    engine: Engine, ring: Keyring, new_id: int, batch: int, progress: Progress | None, total: int
) -> int:
    """Move every row still under an old key to NEW_ID, one committed batch at a time."""
    done = 0
    last_id = 0
    while True:
        with session_scope(engine) as s:
            hold_write_lock(s)
            rows = s.execute(
                select(Secret.id, Secret.name, Secret.key_id, Secret.ciphertext)
                .where(Secret.key_id != new_id, Secret.id > last_id)
                .order_by(Secret.id)
                .limit(batch)
            ).all()
            if not rows:
                return done
            moved = 0
            for row in rows:
                plain = ring.decrypt(row.key_id, row.ciphertext, label=f"Secret {row.name!r}")
                key_id, token = ring.encrypt(plain)
                if key_id != new_id:  # the ring on disk changed under the lock: a bug
                    raise RuntimeError(f"keyring newest key is {key_id}, expected {new_id}")
                # compare-and-set: a value rewritten meanwhile (already on the new key) stays
                result = s.execute(
                    update(Secret)
                    .where(
                        Secret.id == row.id,
                        Secret.key_id == row.key_id,
                        Secret.ciphertext == row.ciphertext,
                    )
                    .values(key_id=new_id, ciphertext=token)
                )
                moved += result.rowcount
            last_id = rows[-1].id
        done += moved
        if progress is not None:
            progress(done, total)
        # a crash point per committed batch, named by the values moved so far
        crashpoints.reached(f"keys.moved.{done}")


def _lock_for_check(session: Session) -> None:
    """Block every writer of `secrets` until this transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE secrets IN SHARE MODE"))
    else:
        hold_write_lock(session)  # SQLite has a single writer: holding it is enough


def rotate(
    rt: Runtime,
    *,
    actor: str = "system",
    batch_size: int = DEFAULT_BATCH,
    progress: Progress | None = None,
    revoke_sessions: bool = False,
) -> RotationReport:
    """Rotate the encryption keys, or finish a rotation that was interrupted.

    Login JWTs signed with a retired key stay valid until they expire (they live at most
    security.jwt_ttl_minutes); REVOKE_SESSIONS ends every login JWT at once instead, in every
    process on the database (for a key that may have leaked).
    """
    if batch_size < 1:
        raise SctkError("The batch size must be at least 1.")
    settings = rt.settings
    require_data_dir(settings)
    ring = Keyring.load(settings.home)  # may create the ring: do it before taking the lock
    engine = rt.engine
    with ring_lock(settings.home, blocking=False, busy_message=BUSY):
        ring.refresh()  # a rotation may have finished between the load and the lock
        resumed = ring.rotation is not None
        if resumed:
            new_id = ring.current_id
        else:
            _preflight(engine, ring)
            old_ids = [k.id for k in ring.keys]
            new_id = ring.begin_rotation()
            crashpoints.reached("keys.begun")
            with session_scope(engine) as s:
                _audit(
                    s,
                    audit_log.KEY_ROTATION_STARTED,
                    actor,
                    {"new_key_id": new_id, "old_key_ids": old_ids},
                )
        old_ids = [k.id for k in ring.keys if k.id != new_id]
        total = sum(n for k, n in _counts(engine).items() if k != new_id)
        done = _reencrypt(engine, ring, new_id, batch_size, progress, total)
        while True:
            with session_scope(engine) as s:
                _lock_for_check(s)
                left = s.scalar(
                    select(func.count()).select_from(Secret).where(Secret.key_id != new_id)
                )
            if not left:
                break
            # a writer holding a ring loaded before step 1 committed under an old key
            done += _reencrypt(engine, ring, new_id, batch_size, progress, total + left)
        crashpoints.reached("keys.reencrypted")
        # From here on any writer takes the lock and then re-reads the ring, whose newest
        # key is already NEW_ID, so no row can reach an old key again. The audit entry is
        # written before the ring changes (in its own transaction: the audit chain has a
        # lock of its own, and taking both in one transaction could deadlock): a death
        # between the two repeats the entry on resume rather than losing it.
        with session_scope(engine) as s:
            _audit(
                s,
                audit_log.KEY_ROTATED,
                actor,
                {
                    "new_key_id": new_id,
                    "retired_key_ids": old_ids,
                    "reencrypted": done,
                    "resumed": resumed,
                },
            )
        crashpoints.reached("keys.audited")
        keep = None
        if not revoke_sessions:
            keep = datetime.now(UTC) + timedelta(minutes=settings.security.jwt_ttl_minutes)
        retired = ring.finish_rotation(keep_sessions_until=keep)
    if revoke_sessions:
        with session_scope(engine) as s:
            sessions.revoke_all(s, actor, reason="key rotation")
    return RotationReport(new_id, done, retired, resumed, revoke_sessions)


def status(rt: Runtime) -> list[KeyStatus]:
    """Every key with its age, state and the number of stored values it encrypts."""
    require_data_dir(rt.settings)
    ring = Keyring.load(rt.settings.home)
    counts = _counts(rt.engine)
    now = datetime.now(UTC)
    out = [
        KeyStatus(k.id, k.created_at, now - k.created_at, k.state, counts.pop(k.id, 0))
        for k in ring.keys
    ]
    out += [KeyStatus(k, None, None, MISSING, n) for k, n in sorted(counts.items())]
    return out


def newest_key_age(settings: Settings) -> timedelta:
    """How long ago the newest key was created (a scheduled rotation compares it to a period)."""
    ring = Keyring.load(settings.home)
    return datetime.now(UTC) - ring.keys[-1].created_at
