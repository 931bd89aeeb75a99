"""Bounded waits on PostgreSQL: a server that stops answering is an error within seconds.

libpq's connect_timeout bounds only the connect. TCP keepalives and tcp_user_timeout notice
a peer whose host is gone, but not a stalled peer whose kernel still acknowledges every
packet (a hung proxy or pooler, a stopped server process): a read then waits for data that
never comes. statement_timeout is enforced by the server, so it cannot end a wait on a
server that does not run. What ends every wait is a deadline kept by the client: psycopg's
wait loop takes a timeout, and `BoundedConnection` gives each wait on the connection one
(the statement timeout plus the answer timeout; a ping gets the answer timeout alone).
A wait cut short leaves the protocol mid-message, so the connection is closed and the pool
replaces it with a new one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL

from sctk.config import DatabaseSettings


class NoAnswer(psycopg.OperationalError):
    """The server did not answer within the connection's deadline."""


class BoundedConnection(psycopg.Connection):
    """A psycopg connection whose every wait for the server ends by a deadline."""

    # seconds a wait may last; None: unbounded (set per connection by `bounded_engine`)
    answer_timeout: float | None = None

    def wait(self, gen: Any, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        limit = timeout if timeout is not None else self.answer_timeout
        try:
            return super().wait(gen, *args, timeout=limit, **kwargs)
        except psycopg.errors._WaitTimeout:
            if timeout is not None:
                raise  # psycopg's own deadline (notifies): its caller handles it
            self._abandon()
            raise NoAnswer(f"the server did not answer within {limit:g} s") from None

    def _abandon(self) -> None:
        # shut the socket first: closing sends a goodbye that must not wait on the stalled peer
        with suppress(OSError, psycopg.Error):
            sock = socket.socket(fileno=self.pgconn.socket)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            finally:
                sock.detach()  # the descriptor stays libpq's to close
        with suppress(Exception):
            self.close()


def _options(url: URL, statement_ms: int) -> str:
    given = url.query.get("options")
    given = given if isinstance(given, str) else " ".join(given or ())
    return f"{given} -c statement_timeout={statement_ms}".strip()


def bounded_engine(url: URL, db: DatabaseSettings) -> Engine:
    """A PostgreSQL engine on which connecting, a pool checkout, a ping and every statement
    end within DB's limits (connect_timeout, timeout_seconds, statement_timeout_seconds)."""
    answer = float(db.timeout_seconds)
    statement = float(db.statement_timeout_seconds)
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=answer,
        connect_args={
            "connect_timeout": db.connect_timeout,
            # a host that vanishes: keepalives when idle, tcp_user_timeout when sending
            "keepalives": 1,
            "keepalives_idle": max(1, round(answer)),
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": int(answer * 1000),
            # a slow statement is cancelled by the server, which then still answers
            "options": _options(url, int(statement * 1000)),
        },
    )
    # a statement gets its server-side limit plus time for the answer to travel; without
    # a server-side limit (0), only the pings and the pool are bounded
    per_wait = statement + answer if statement > 0 else None

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect, _record, cargs, cparams):  # SQLAlchemy's hook
        conn = BoundedConnection.connect(*cargs, **cparams)
        conn.answer_timeout = per_wait
        return conn

    plain_ping = engine.dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        saved = getattr(dbapi_connection, "answer_timeout", None)
        dbapi_connection.answer_timeout = answer
        try:
            return plain_ping(dbapi_connection)
        finally:
            dbapi_connection.answer_timeout = saved

    engine.dialect.do_ping = do_ping  # type: ignore[method-assign]
    return engine


@contextmanager
def unbounded(conn: Connection) -> Iterator[None]:
    """No statement limit, client or server side, on CONN while the block runs (a migration,
    VACUUM, REINDEX: work that may rightly take longer than any single request)."""
    dbapi = conn.connection.dbapi_connection
    saved = getattr(dbapi, "answer_timeout", None)
    conn.exec_driver_sql("SET statement_timeout = 0")
    if isinstance(dbapi, BoundedConnection):
        dbapi.answer_timeout = None
    try:
        yield
    finally:
        if isinstance(dbapi, BoundedConnection):
            dbapi.answer_timeout = saved
        # back to the engine's own limit; in a failed transaction the rollback undoes the SET
        with suppress(Exception):
            conn.exec_driver_sql("SET statement_timeout = DEFAULT")
