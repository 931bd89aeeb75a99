"""Whether a snapshot is usable, not only intact: what its database says agrees with the
files beside it.

`verify` proves the bytes are the bytes that were written. This checks their meaning, in the
snapshot's own database loaded into a scratch database: every dataset and model row names a
file the snapshot holds with the SHA-256 the row recorded, the audit chain verifies, and the
schema is at a revision this sctk knows (so a restore can open and migrate it). A snapshot
failing any of these restores "successfully" into a service that cannot use it.

A snapshot never changes, so its verdict is found once and kept in its verification marker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.orm import Session

from sctk.storage.engine import first_line, normalise_url

# (table, how a row is named, columns) of the rows that vouch for a file of the data directory
FILE_ROWS = (
    ("datasets", "dataset '{name}' (id {id})", "id, name, path, sha256"),
    ("uq_models", "model '{name}:{version}' (id {id})", "id, name, version, path, sha256"),
)


def _known_revision(revision: str) -> bool:
    from alembic.util import CommandError

    from sctk.storage.migrate import script

    try:
        return script().get_revision(revision) is not None
    except CommandError:
        return False


def check(url: str, held: Callable[[list[str]], dict[str, str]]) -> dict[str, Any]:
    """Check the database at URL (a snapshot's, loaded) against the snapshot's files:
    HELD(paths) gives the SHA-256 of each of PATHS the snapshot holds (looked up in path
    order, so the snapshot's list is streamed once, not held). {"ok", "problems":
    [sentence...], "files_checked", "audit_entries", "schema_revision"}."""
    from sctk.security import audit_log

    problems: list[str] = []
    out: dict[str, Any] = {"files_checked": 0, "audit_entries": 0, "schema_revision": None}
    # an engine of its own: URL is a scratch copy loaded from a snapshot, not a database a
    # runtime serves, and it is dropped right after this reading
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = None
            if "alembic_version" in tables:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            out["schema_revision"] = revision
            if not revision:
                problems.append("the database has no schema revision, so it cannot be migrated")
            elif not _known_revision(revision):
                problems.append(
                    f"the database is at schema revision {revision}, which this sctk does not know"
                )
            rows = [
                (name.format(**row._mapping), row.path, row.sha256)
                for table, name, columns in FILE_ROWS
                if table in tables
                for row in conn.execute(text(f"SELECT {columns} FROM {table} ORDER BY id"))
            ]
            by_path = held([path for _, path, _ in rows])
            for what, path, sha256 in rows:
                out["files_checked"] += 1
                have = by_path.get(path)
                if have is None:
                    problems.append(f"{what}: {path} is not in the snapshot")
                elif have != sha256:
                    problems.append(
                        f"{what}: {path} in the snapshot has SHA-256 {have[:12]}..., "
                        f"the database records {sha256[:12]}..."
                    )
        with Session(engine) as session:
            chain = audit_log.verify(session)
        out["audit_entries"] = chain.checked
        if not chain.ok:
            problems.append(f"the audit chain does not verify: {chain.problem}")
    except Exception as exc:  # a database that cannot be read is the finding
        problems.append(f"the database cannot be read: {first_line(exc)}")
    finally:
        engine.dispose()
    out["ok"] = not problems
    out["problems"] = problems
    return out
