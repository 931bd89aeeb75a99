"""Engines: SQLite pragmas, timezone-aware UTC timestamps, and unreachable servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import StatementError

from sctk import config
from sctk.errors import ConfigError, DatabaseUnavailable
from sctk.ops.init_home import init_home
from sctk.storage.engine import make_engine, normalise_url, ping, session_scope
from sctk.storage.models import CheckResult, MaintenanceRun
from tests.helpers import free_port

IST = timezone(timedelta(hours=5, minutes=30))
PDT = timezone(timedelta(hours=-7))


@pytest.fixture
def engine(settings):
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def test_sqlite_pragmas_follow_settings(tmp_path):
    home = tmp_path / "home"
    init_home(home)
    settings = config.load(home, {"database": {"busy_timeout_ms": 4321}}).settings
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            pragma = {
                name: conn.execute(text(f"PRAGMA {name}")).scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
    finally:
        engine.dispose()
    assert pragma == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 4321,
        "synchronous": 1,
    }


def test_timestamps_round_trip_aware_utc(engine):
    checked = datetime(2024, 3, 1, 17, 45, 12, 123456, tzinfo=IST)
    started = datetime(2024, 7, 4, 23, 30, 0, 654321, tzinfo=PDT)  # the next day in UTC
    finished = started + timedelta(minutes=5, microseconds=1)
    with session_scope(engine) as session:
        session.add(
            CheckResult(
                name="disk", status="OK", message="fine", values={"a": 1}, checked_at=checked
            )
        )
        session.add(MaintenanceRun(task="vacuum", started_at=started, finished_at=finished))

    with session_scope(engine) as session:
        result = session.scalars(select(CheckResult)).one()
        run = session.scalars(select(MaintenanceRun)).one()
    for got, want in [
        (result.checked_at, checked),
        (run.started_at, started),
        (run.finished_at, finished),
    ]:
        assert got.tzinfo is not None
        assert got.utcoffset() == timedelta(0)
        assert got == want
        assert got.replace(tzinfo=None) == want.astimezone(UTC).replace(tzinfo=None)
    assert run.started_at.date().isoformat() == "2024-07-05"
    assert result.values == {"a": 1}
    # defaults fill in the rest
    assert (run.status, run.summary, run.details, run.trigger) == ("running", "", {}, "manual")


def test_ping_and_default_timestamp(engine):
    latency = ping(engine)
    assert 0 < latency < 5000

    before = datetime.now(UTC)
    with session_scope(engine) as session:
        session.add(CheckResult(name="disk", status="OK", message="fine"))
    with session_scope(engine) as session:
        stored = session.scalars(select(CheckResult.checked_at)).one()
    assert stored.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= stored <= datetime.now(UTC) + timedelta(seconds=1)


def test_naive_datetime_is_refused(engine):
    with pytest.raises(StatementError) as info, session_scope(engine) as session:
        session.add(
            CheckResult(name="disk", status="OK", message="x", checked_at=datetime(2024, 1, 1))
        )
    assert isinstance(info.value.orig, ValueError)
    assert "naive datetime" in str(info.value.orig)
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(CheckResult)) == 0


def test_ping_closed_port_names_host_and_port(tmp_path):
    port = free_port()
    settings = config.load(tmp_path / "home", {"database": {"connect_timeout": 2}}).settings
    engine = make_engine(settings, f"postgresql://sctk:pw-not-shown@127.0.0.1:{port}/sctk")
    try:
        with pytest.raises(DatabaseUnavailable) as info:
            ping(engine)
    finally:
        engine.dispose()
    message = info.value.message
    assert f"127.0.0.1:{port}" in message
    assert "check database_url" in message
    assert "Traceback" not in message
    assert "\n" not in message
    assert "pw-not-shown" not in message
    assert info.value.http_status == 503


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_normalise_url_picks_psycopg(url, driver):
    assert normalise_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url"])
def test_unsupported_or_invalid_url_is_a_config_error(url):
    with pytest.raises(ConfigError) as info:
        normalise_url(url)
    assert "database_url" in info.value.message
