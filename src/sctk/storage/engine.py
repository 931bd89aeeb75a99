"""Database engines: SQLite tuned for a single-host service, or PostgreSQL through psycopg 3."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from sctk.config import Settings
from sctk.errors import ConfigError, DatabaseUnavailable


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


def make_engine(settings: Settings, url: str | None = None) -> Engine:
    """An engine for the configured database (or an explicit URL)."""
    parsed = normalise_url(url or settings.db_url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas(settings.database.busy_timeout_ms))
        return engine
    return create_engine(
        parsed,
        pool_pre_ping=True,
        connect_args={"connect_timeout": settings.database.connect_timeout},
    )


def first_line(exc: BaseException) -> str:
    """The driver's own first line of an error, without SQLAlchemy's wrapping."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


def unreachable(exc: BaseException) -> DatabaseUnavailable:
    """For a connection error raised where the engine is not at hand (the driver's message
    names the host and port)."""
    return DatabaseUnavailable(
        f"The database cannot be reached: {first_line(exc)}; "
        "check database_url and that the server is running."
    )


def unavailable(engine: Engine, exc: BaseException) -> DatabaseUnavailable:
    """Turn a driver error into one sentence naming the target and the likely fix."""
    return DatabaseUnavailable(
        f"Cannot connect to the {describe_target(engine.url)}: {first_line(exc)}; "
        "check database_url and that the server is running."
    )


def ping(engine: Engine) -> float:
    """Round-trip one query; return the latency in milliseconds or raise DatabaseUnavailable."""
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OperationalError, DBAPIError) as exc:
        raise unavailable(engine, exc) from None
    return (time.perf_counter() - start) * 1000.0


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
