"""Database errors name their real cause: a SQLite lock held past the busy timeout, a
server that cannot be reached, a full disk (tests/reliability/test_full_disk.py) and a
server that stops answering (tests/reliability/test_database_stall.py) are each their own
sentence, with what to do."""

from __future__ import annotations

import sqlite3
import time

import pytest

from sctk import config
from sctk.api.app import create_app
from sctk.storage.engine import make_engine
from tests.helpers import LiveServer, free_port, run_sctk
from tests.security.conftest import bearer, create_token, create_user

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def locked(home):
    """The home's SQLite file held under an exclusive lock by another connection."""
    holder = sqlite3.connect(home / "sctk.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    yield home
    holder.execute("ROLLBACK")
    holder.close()


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_lock_past_the_busy_timeout_is_named_as_a_lock(locked, tmp_path):
    home = locked
    source = tmp_path / "points.csv"
    source.write_text("x,y\n1,2\n3,4\n")
    done = run_sctk(
        "data", "import", str(source), home=home, env={"SCTK_DATABASE__BUSY_TIMEOUT_MS": "300"}
    )
    assert done.returncode != 0
    message = done.stderr.strip()
    assert "Traceback" not in done.stderr + done.stdout
    assert "\n" not in message, message
    assert message.startswith(f"Error: The SQLite file {home / 'sctk.db'} stayed locked"), message
    assert "longer than 300 ms" in message and "database.busy_timeout_ms" in message, message
    assert "check database_url" not in message, message
    assert not [p for p in (home / "data").iterdir()], "the refused import left a file"


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_locked_database_over_http_is_a_503_naming_the_lock(home):
    settings = config.load(home, {"database": {"busy_timeout_ms": 300}}).settings
    engine = make_engine(settings)
    create_user(engine, "ana.lyst", "Velvet-Orbit-Meadow-927", "admin")
    token, _ = create_token(engine, "ana.lyst")
    engine.dispose()
    with LiveServer(create_app(settings)) as server, server.client() as http:
        assert http.get("/api/v1/datasets", headers=bearer(token)).status_code == 200
        holder = sqlite3.connect(home / "sctk.db", isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            r = http.post(
                "/api/v1/datasets",
                params={"filename": "points.csv"},
                content=b"x,y\n1,2\n",
                headers=bearer(token),
            )
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert r.status_code == 503, r.text
        assert r.headers["content-type"].startswith(PROBLEM_JSON)
        body = r.json()
        assert body["title"] == "Database locked", body
        assert "stayed locked by another process for longer than 300 ms" in body["detail"]
        assert not list((home / "tmp").iterdir()), "the upload's temporary file was kept"
        # the lock gone, the same upload goes through
        r = http.post(
            "/api/v1/datasets",
            params={"filename": "points.csv"},
            content=b"x,y\n1,2\n",
            headers=bearer(token),
        )
        assert r.status_code == 201, r.text


def test_an_unreachable_server_is_not_called_a_lock_or_a_full_disk(tmp_path):
    port = free_port()
    settings = config.load(
        tmp_path / "home", {"database_url": f"postgresql://sctk@127.0.0.1:{port}/sctk"}
    ).settings
    from sctk.errors import DatabaseUnavailable
    from sctk.storage.engine import ping

    engine = make_engine(settings)
    try:
        with pytest.raises(DatabaseUnavailable) as caught:
            ping(engine)
    finally:
        engine.dispose()
    error = caught.value
    assert type(error) is DatabaseUnavailable and error.http_status == 503
    assert error.message.startswith(f"Cannot connect to the PostgreSQL at 127.0.0.1:{port}/sctk")
    assert "check database_url and that the server is running" in error.message
    assert "locked" not in error.message and "space" not in error.message


# -- PostgreSQL: every wait bounded -----------------------------------------------------------


def _pg_settings(tmp_path, url: str, **database):
    return config.load(tmp_path / "home", {"database_url": url, "database": database}).settings


@pytest.mark.postgres
def test_a_slow_statement_is_cancelled_by_its_limit_and_named(pg_migrated_url, tmp_path):
    from sqlalchemy import text

    from sctk.errors import DatabaseTimeout
    from sctk.storage.engine import DATABASE_ERRORS, unavailable, unbounded_statements

    settings = _pg_settings(tmp_path, pg_migrated_url, statement_timeout_seconds=0.5)
    engine = make_engine(settings)
    try:
        start = time.monotonic()
        with pytest.raises(DATABASE_ERRORS) as caught, engine.connect() as conn:
            conn.execute(text("SELECT pg_sleep(5)"))
        assert time.monotonic() - start < 4
        error = unavailable(engine, caught.value)
        assert isinstance(error, DatabaseTimeout) and error.http_status == 503
        assert "ran longer than database.statement_timeout_seconds (0.5 s)" in error.message
        # long work lifts the limit for itself only
        with engine.begin() as conn, unbounded_statements(conn):
            conn.execute(text("SELECT pg_sleep(0.8)"))
        with engine.connect() as conn:
            assert conn.scalar(text("SHOW statement_timeout")) == "500ms"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_statement_waiting_on_a_stalled_path_ends_by_its_deadline(pg_migrated_url, tmp_path):
    """statement_timeout is the server's: on a stalled path only the client's deadline
    ends the wait for an answer (statement limit + answer timeout)."""
    from sqlalchemy import text

    from sctk.errors import DatabaseTimeout
    from sctk.storage.engine import DATABASE_ERRORS, unavailable
    from tests.storage.tcp_forwarder import Forwarder

    relay = Forwarder(pg_migrated_url)
    settings = _pg_settings(tmp_path, relay.url, statement_timeout_seconds=1, timeout_seconds=1)
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT 1")) == 1
            relay.stall()
            start = time.monotonic()
            with pytest.raises(DATABASE_ERRORS) as caught:
                conn.execute(text("SELECT 2"))
            took = time.monotonic() - start
        assert 1.5 < took < 5, took
        error = unavailable(engine, caught.value)
        assert isinstance(error, DatabaseTimeout), error.message
        assert "did not answer in time (the server did not answer within 2 s)" in error.message
        relay.resume()
        with engine.connect() as conn:  # the abandoned connection was replaced
            assert conn.scalar(text("SELECT 3")) == 3
    finally:
        engine.dispose()
        relay.close()
