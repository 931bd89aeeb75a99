"""Shared fixtures: real data directories on temporary paths, on SQLite and on PostgreSQL.

PostgreSQL tests need SCTK_TEST_POSTGRES_URL (CI sets it). Each test gets a database of its
own, created from that server and dropped afterwards, so tests never see each other's rows.
When the variable is set but the server cannot be reached, the tests fail: CI must not turn
a missing PostgreSQL into a row of skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sctk import config
from sctk.config import Settings
from sctk.storage.layout import init_home
from tests.helpers import LiveServer

PG_URL = os.environ.get("SCTK_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def _admin_url(url: str):
    return make_url(url).set(drivername="postgresql+psycopg")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; its URL (without driver) is yielded."""
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set SCTK_TEST_POSTGRES_URL to run this test")
    admin = create_engine(_admin_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"sctk_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend, tmp_path, request) -> str | None:
    """None for SQLite (the default database of the data directory), else a fresh PG URL."""
    if backend == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


@pytest.fixture
def home(tmp_path, db_url) -> Path:
    """An initialised data directory on the parametrised backend."""
    path = tmp_path / "home"
    init_home(path, database_url=db_url)
    return path


@pytest.fixture
def settings(home) -> Settings:
    return config.load(home).settings


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the developer's own SCTK_* variables or default home."""
    for key in list(os.environ):
        if key.startswith("SCTK_") and not key.startswith("SCTK_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def live_app(settings) -> Iterator[LiveServer]:
    """The sctk API for the parametrised data directory, over real HTTP."""
    from sctk.api.app import create_app

    with LiveServer(create_app(settings)) as server:
        yield server
