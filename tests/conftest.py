"""Shared fixtures: real data directories on temporary paths, on SQLite and on PostgreSQL.

PostgreSQL tests need SCTK_TEST_POSTGRES_URL (CI sets it). Each test gets a database of its
own, created from that server and dropped afterwards, so tests never see each other's rows.
When the variable is set but the server cannot be reached, the tests fail: CI must not turn
a missing PostgreSQL into a row of skips.

The suite runs on pytest-xdist workers (addopts in pyproject.toml). What the workers share is
made safe here: a test marked `exclusive` (it acts on every process of the machine) runs
while no other worker runs a test, and the Redis tests share one xdist group (one worker
uses Redis database 15 at a time, as a serial run does).
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sctk import config
from sctk.config import Settings
from sctk.ops.init_home import init_home
from sctk.runtime import Runtime
from tests.helpers import LiveServer
from tests.uq import physics_examples

PG_URL = os.environ.get("SCTK_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


physics_examples.register()  # the tests' own physics functions, in every test process


def _admin_url(url: str):
    return make_url(url).set(drivername="postgresql+psycopg")


def _drop(name: str) -> None:
    admin = create_engine(_admin_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def _database(template: str | None = None, prefix: str = "sctk_t", drop=_drop) -> Iterator[str]:
    """A new database on the test server (a copy of TEMPLATE, or empty), handed to DROP
    afterwards; its name is yielded. Names are random: tests and xdist workers never share
    one."""
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set SCTK_TEST_POSTGRES_URL to run this test")
    admin = create_engine(_admin_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    finally:
        admin.dispose()
    try:
        yield name
    finally:
        drop(name)


class _Dropper:
    """Drops the tests' databases on a thread of its own, while the next test runs: a
    DROP DATABASE ... WITH (FORCE) mostly waits (for the server's other backends and the
    file system), and nothing needs the database gone at once. `close` waits for them all."""

    def __init__(self) -> None:
        self._names: queue.Queue[str | None] = queue.Queue()
        self._errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name="test-db-dropper", daemon=True)
        self._thread.start()

    def __call__(self, name: str) -> None:
        self._names.put(name)

    def _run(self) -> None:
        while (name := self._names.get()) is not None:
            try:
                _drop(name)
            except Exception as exc:  # reported at the end of the session
                self._errors.append(f"{name}: {exc}")

    def close(self) -> None:
        self._names.put(None)
        self._thread.join(timeout=300)
        assert not self._errors, f"test databases not dropped: {self._errors}"


@pytest.fixture(scope="session")
def _pg_dropper() -> Iterator[_Dropper]:
    dropper = _Dropper()
    yield dropper
    dropper.close()


def _url_of(name: str) -> str:
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def pg_url(_pg_dropper) -> Iterator[str]:
    """A fresh, empty PostgreSQL database; its URL (without driver) is yielded."""
    with _database(drop=_pg_dropper) as name:
        yield _url_of(name)


@pytest.fixture(scope="session")
def pg_schema_template() -> Iterator[str]:
    """A database brought to the newest schema by sctk's own migrations, once per test
    process; the name is yielded. Nothing ever connects to it but CREATE DATABASE ...
    TEMPLATE (which needs it idle). Migrations are DDL only, so a copy of it is the database
    that `init_home` on an empty one makes, without running them again for every test."""
    from sqlalchemy.pool import NullPool

    from sctk.storage.migrate import upgrade

    with _database(prefix="sctk_template") as name:
        engine = create_engine(_admin_url(_url_of(name)), poolclass=NullPool)
        try:
            upgrade(engine, "head")
        finally:
            engine.dispose()
        yield name


@pytest.fixture
def pg_migrated_url(pg_schema_template, _pg_dropper) -> Iterator[str]:
    """A fresh PostgreSQL database already at the newest schema (a copy of the template)."""
    with _database(template=pg_schema_template, drop=_pg_dropper) as name:
        yield _url_of(name)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def db_url(backend, tmp_path, request) -> str | None:
    """None for SQLite (the default database of the data directory), else a fresh PG database
    at the newest schema (`init_home` on it finds nothing to migrate; tests of migrating an
    empty database use `pg_url`, as tests/storage/test_layout.py does)."""
    if backend == "sqlite":
        return None
    return request.getfixturevalue("pg_migrated_url")


@pytest.fixture
def home(tmp_path, db_url) -> Path:
    """An initialised data directory on the parametrised backend."""
    path = tmp_path / "home"
    init_home(path, database_url=db_url)
    return path


@pytest.fixture
def settings(home) -> Settings:
    return config.load(home).settings


@pytest.fixture
def runtime(settings) -> Iterator[Runtime]:
    """The data directory's runtime, as a command would build it; closed after the test."""
    with Runtime(settings) as rt:
        yield rt


@pytest.fixture(autouse=True)
def _machine_share(request, tmp_path_factory) -> Iterator[None]:
    """Across xdist workers: a test marked `exclusive` runs alone, the others side by side.

    A readers-writer lock on two files in the run's shared temporary directory: every test
    holds LOCK (shared, or exclusive when marked); GATE is taken on the way in, and held by
    an exclusive test until it has LOCK, so that tests starting meanwhile wait behind it
    rather than keep it waiting forever. Without xdist there is nothing to share."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    shared = tmp_path_factory.getbasetemp().parent  # <run>/popen-gwN -> <run>
    exclusive = request.node.get_closest_marker("exclusive") is not None
    with open(shared / "machine.gate", "a") as gate, open(shared / "machine.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


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
