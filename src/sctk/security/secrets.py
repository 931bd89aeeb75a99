"""Sensitive values at rest (webhook URLs, SMTP passwords, credentials), encrypted by the keyring.

Every such value lives in the `secrets` table so that key rotation can find them all. The
functions take the caller's session and do not commit: the caller's transaction decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from sctk.errors import NotFound, SctkError
from sctk.security.keyring import Keyring
from sctk.storage.models.base import utcnow
from sctk.storage.models.security import Secret

MAX_NAME = 200


@dataclass(frozen=True)
class SecretInfo:
    """A stored secret as it may be listed: never its value."""

    name: str
    key_id: int
    created_at: datetime
    updated_at: datetime


def hold_write_lock(session: Session) -> None:
    """Take the database's write lock on `secrets` for the rest of the transaction.

    A statement that writes nothing still takes it (SQLite's database write lock, PostgreSQL's
    ROW EXCLUSIVE table lock). Taking it *before* choosing a key means a rotation that is
    about to retire old keys waits for this transaction, so no value can be committed under
    a key that has just been removed. On SQLite it also keeps a read-then-write transaction
    from failing when another writer committed in between.
    """
    session.execute(text("UPDATE secrets SET key_id = key_id WHERE 1 = 0"))


def _check_name(name: str) -> None:
    if not name or not name.strip() or len(name) > MAX_NAME:
        raise SctkError(
            f"Secret name {name!r} is not valid; use 1 to {MAX_NAME} characters, not only spaces."
        )


def put_secret(session: Session, ring: Keyring, name: str, value: str) -> int:
    """Store VALUE under NAME (replacing any previous value), encrypted with the newest key.

    Returns the id of the key used.
    """
    _check_name(name)
    hold_write_lock(session)
    key_id, token = ring.encrypt(value.encode("utf-8"))  # refreshes the ring from disk first
    now = utcnow()
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(Secret).values(
        name=name, key_id=key_id, ciphertext=token, created_at=now, updated_at=now
    )
    # an upsert, so two writers storing the same new name cannot fail on the unique index
    stmt = stmt.on_conflict_do_update(
        index_elements=[Secret.name],
        set_={"key_id": key_id, "ciphertext": token, "updated_at": now},
    )
    session.execute(stmt)
    return key_id


def get_secret(session: Session, ring: Keyring, name: str) -> str:
    """The plaintext stored under NAME; SctkError if there is none or it cannot be decrypted."""
    row = session.scalar(select(Secret).where(Secret.name == name))
    if row is None:
        raise NotFound(
            f"No secret named {name!r}; 'sctk keys status' shows how many are stored, "
            "and the command that uses it can set it."
        )
    return ring.decrypt(row.key_id, row.ciphertext, label=f"Secret {name!r}").decode("utf-8")


def delete_secret(session: Session, name: str) -> bool:
    """Remove the secret NAME; False when there was none."""
    row = session.scalar(select(Secret).where(Secret.name == name))
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


def list_secrets(session: Session) -> list[SecretInfo]:
    """Names and key ids of every stored secret, sorted by name; never the values."""
    rows = session.execute(
        select(Secret.name, Secret.key_id, Secret.created_at, Secret.updated_at).order_by(
            Secret.name
        )
    )
    return [SecretInfo(*row) for row in rows]
