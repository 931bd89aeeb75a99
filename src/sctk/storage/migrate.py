"""Alembic migrations run programmatically against the configured database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from sctk.errors import SctkError
from sctk.storage.engine import unavailable, unbounded_statements

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant works; it keeps two processes (e.g. several `sctk serve` workers) from
# migrating one PostgreSQL database at the same time.
_PG_LOCK_KEY = 0x5C7C_0001


@dataclass(frozen=True)
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_head: bool


# More directories of migrations, os.pathsep-separated: site-specific revisions, and the
# tests' deliberately failing upgrade. They extend sctk's own chain from its head.
EXTRA_MIGRATIONS_ENV = "SCTK_EXTRA_MIGRATIONS"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    extra = [d for d in os.environ.get(EXTRA_MIGRATIONS_ENV, "").split(os.pathsep) if d]
    if extra:
        dirs = [str(MIGRATIONS_DIR / "versions"), *extra]
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_locations", os.pathsep.join(dirs))
    return cfg


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def _versions_signature() -> tuple:
    """Names and mtimes of the migration files: what `head()` depends on."""
    dirs = [MIGRATIONS_DIR / "versions"]
    dirs += [Path(d) for d in os.environ.get(EXTRA_MIGRATIONS_ENV, "").split(os.pathsep) if d]
    return tuple(
        (str(f), f.stat().st_mtime_ns) for d in dirs if d.is_dir() for f in sorted(d.glob("*.py"))
    )


_heads: dict[tuple, str] = {}


def head() -> str:
    # Reading the scripts (each one imported) takes tens of ms, and the readiness probe asks
    # on every call: the answer is kept while the migration files stay the same.
    signature = _versions_signature()
    known = _heads.get(signature)
    if known is not None:
        return known
    heads = script().get_heads()
    if len(heads) != 1:  # a packaging bug, not a user error
        raise RuntimeError(f"sctk migrations have {len(heads)} heads; expected exactly one")
    _heads.clear()
    _heads[signature] = heads[0]
    return heads[0]


def history() -> list[Revision]:
    """All revisions, newest first."""
    return [
        Revision(r.revision, r.down_revision, (r.doc or "").strip(), r.is_head)
        for r in script().walk_revisions()
    ]


def current(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except (OperationalError, DBAPIError) as exc:
        raise unavailable(engine, exc) from None


def _known(rev: str) -> bool:
    if rev in ("head", "base", "heads"):
        return True
    try:
        return script().get_revision(rev) is not None
    except CommandError:
        return False


def _run(engine: Engine, action: str, rev: str) -> tuple[str | None, str | None]:
    if not _known(rev):
        raise SctkError(
            f"Unknown revision '{rev}'; 'sctk db history' lists the revisions there are."
        )
    before = current(engine)
    cfg = _config()
    try:
        # a migration may rewrite a large table: no statement limit applies to it
        with engine.begin() as conn, unbounded_statements(conn):
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, rev)
    except CommandError as exc:
        raise SctkError(f"Cannot {action} to '{rev}' from '{before or 'base'}': {exc}.") from None
    except (OperationalError, DBAPIError) as exc:
        raise unavailable(engine, exc) from None
    return before, current(engine)


def upgrade(engine: Engine, rev: str = "head") -> tuple[str | None, str | None]:
    """Upgrade to REV (default head); return (revision before, revision after)."""
    return _run(engine, "upgrade", rev)


def downgrade(engine: Engine, rev: str) -> tuple[str | None, str | None]:
    """Downgrade to REV ('base' empties the schema); return (before, after)."""
    return _run(engine, "downgrade", rev)
