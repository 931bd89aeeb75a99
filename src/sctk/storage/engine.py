"""Database engines: SQLite tuned for a single-host service, or PostgreSQL through psycopg 3."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from sctk.config import Settings
from sctk.errors import (
    ConfigError,
    DatabaseLocked,
    DatabaseTimeout,
    DatabaseUnavailable,
    InsufficientStorage,
    SctkError,
)

# Errors of the database itself (not of a statement: an IntegrityError is the caller's),
# each named by `database_error`: locked, full, not answering, unreachable, no free connection.
DATABASE_ERRORS = (OperationalError, InterfaceError, PoolTimeout)


def normalise_url(url: str) -> URL:
    """Parse a database URL, choosing psycopg 3 as the PostgreSQL driver."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            "database_url is not a valid database URL; expected sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB."
        ) from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"database_url uses '{parsed.get_backend_name()}', which sctk does not support; "
            "use sqlite or postgresql."
        )
    return parsed


def describe_target(url: URL) -> str:
    """Where a URL points, without its password: 'host:port/db' or the SQLite file."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _sqlite_pragmas(busy_timeout_ms: int):
    def on_connect(dbapi_conn, _record):
        # WAL lets readers proceed while one writer commits; foreign keys are off by default
        # in SQLite; the busy timeout turns "database is locked" into a short wait.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return on_connect


# Engines this process has built: each holds a pool of its own, so a command or a served
# process should build one (sctk.runtime); the tests read the count to hold code to that.
engines_built = 0


def make_engine(settings: Settings, url: str | None = None) -> Engine:
    """An engine for the configured database (or an explicit URL).

    Code that serves a command, a request or a job gets its engine from the process's
    `sctk.runtime.Runtime` instead of calling this: only the runtime and the procedures that
    reach a second database (a scratch copy, a migration target) build engines.

    On PostgreSQL every wait is bounded (see `sctk.storage.pgwait`): a server that accepts
    connections but stops answering makes a statement fail within seconds, not hang."""
    global engines_built
    parsed = normalise_url(url or settings.db_url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas(settings.database.busy_timeout_ms))
    else:
        from sctk.storage import pgwait

        engine = pgwait.bounded_engine(parsed, settings.database)
    # the limits an error names (a lock's busy timeout, a statement timeout)
    engine.sctk_settings = settings  # type: ignore[attr-defined]
    engines_built += 1
    return engine


@contextmanager
def unbounded_statements(conn: Connection) -> Iterator[None]:
    """Lift the statement time limits for long work on CONN (a migration); SQLite has none."""
    if conn.dialect.name != "postgresql":
        yield
        return
    from sctk.storage import pgwait

    with pgwait.unbounded(conn):
        yield


def first_line(exc: BaseException) -> str:
    """The driver's own first line of an error, without SQLAlchemy's wrapping."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


_LOCKED = ("database is locked", "database table is locked", "database schema is locked")
_FULL = ("database or disk is full", "no space left on device", "could not extend file")
_NEARLY_FULL = 1 << 20  # bytes: less than this free and SQLite's I/O errors are a full disk
_TIMEOUTS = ("connection timeout expired", "timeout expired", "did not answer within")


def database_error(
    exc: BaseException, url: URL | str | None = None, settings: Settings | None = None
) -> SctkError:
    """One sentence for a database error, naming its real cause and what to do: a SQLite
    lock held past the busy timeout, a full disk, a server that does not answer, a pool with
    no free connection, or a server that cannot be reached. URL (when known) names the
    database; SETTINGS (when known) give the limits that were reached."""
    target = "database"
    if url is not None:
        target = describe_target(make_url(url) if isinstance(url, str) else url)
    reason = first_line(exc)
    low = str(getattr(exc, "orig", None) or exc).lower()
    db = settings.database if settings is not None else None
    if isinstance(exc, PoolTimeout):
        wait = f"{db.timeout_seconds:g} s" if db is not None else "the pool timeout"
        return DatabaseTimeout(
            f"No connection to the {target} came free within {wait}: every pooled connection "
            "is busy, as when the database stops answering; check the database server and "
            "the network path to it, or raise database.timeout_seconds."
        )
    if any(m in low for m in _LOCKED):
        wait = f"{db.busy_timeout_ms} ms" if db is not None else "its busy timeout"
        return DatabaseLocked(
            f"The {target} stayed locked by another process for longer than {wait}; let the "
            "other command (an import, a backup, a migration) finish and try again, or raise "
            "database.busy_timeout_ms."
        )
    if any(m in low for m in _FULL) or (_sqlite_io(low) and _device_full(url)):
        return InsufficientStorage(
            f"The {target} ran out of disk space ({reason}), so nothing was written; free "
            "some space on the device that holds it and try again."
        )
    if "statement timeout" in low:
        limit = f" ({db.statement_timeout_seconds:g} s)" if db is not None else ""
        return DatabaseTimeout(
            f"A statement on the {target} ran longer than database.statement_timeout_seconds"
            f"{limit} and was cancelled; try again, or raise the limit if the work is "
            "expected to take that long."
        )
    if any(m in low for m in _TIMEOUTS):
        return DatabaseTimeout(
            f"The {target} did not answer in time ({reason}); the server is overloaded, "
            "stopped or behind a stalled network path: check it and the network between."
        )
    if "unable to open database file" in low:
        return DatabaseUnavailable(
            f"Cannot open the {target} ({reason}); check that the data directory exists "
            "('sctk init' makes one) and is writable."
        )
    return DatabaseUnavailable(
        f"Cannot connect to the {target}: {reason}; check database_url and that the server "
        "is running."
    )


def _sqlite_io(message: str) -> bool:
    # SQLite cannot create its shared-memory file on a full disk and says only this
    return "disk i/o error" in message or "unable to open database file" in message


def _device_full(url: URL | str | None) -> bool:
    """True when URL is a SQLite file whose file system has (next to) no space left."""
    if url is None:
        return False
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return False
    folder = Path(parsed.database).parent
    try:
        return shutil.disk_usage(folder).free < _NEARLY_FULL
    except OSError:
        return False


def unreachable(exc: BaseException) -> SctkError:
    """For a database error raised where the engine is not at hand."""
    return database_error(exc)


def unavailable(engine: Engine, exc: BaseException) -> SctkError:
    """Turn a driver error into one sentence naming the target, the cause and the fix."""
    return database_error(exc, engine.url, getattr(engine, "sctk_settings", None))


def ping(engine: Engine) -> float:
    """Round-trip one query; return the latency in milliseconds or raise DatabaseUnavailable."""
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (*DATABASE_ERRORS, DBAPIError) as exc:
        raise unavailable(engine, exc) from None
    return (time.perf_counter() - start) * 1000.0


@contextmanager
def one_off_session(settings: Settings) -> Iterator[Session]:
    """A session on an engine of its own, disposed afterwards: for a record written now and
    then by code that holds no engine (a backup run's row, from a command or a job)."""
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
