"""The runtime: one engine per process at each way in (a command, the served app), shared
by the sessions, the bus and the loops, and disposed by `Runtime.close`.

Engines are counted by `sctk.storage.engine.engines_built`, which every engine built in the
process increments; nothing is mocked."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from sctk.api.app import create_app
from sctk.cli import main
from sctk.runtime import Runtime
from sctk.storage import engine as engines
from sctk.storage.models import AuditEntry, Job


def _sctk(home, *args: str) -> None:
    """Run one command in this process, as `sctk` would; fail on a non-zero exit."""
    with pytest.raises(SystemExit) as stopped:
        main(["--home", str(home), *args])
    assert stopped.value.code in (0, None)


def test_a_command_builds_one_engine_for_its_sessions_and_its_bus(home, settings):
    before = engines.engines_built
    # a job submitted (a session, and the bus that publishes its event), then the queue read
    _sctk(home, "jobs", "submit", "noop", "--json")
    assert engines.engines_built - before == 1
    before = engines.engines_built
    _sctk(home, "maintenance", "run", "tmp", "--json")  # the task's record and its run
    _sctk(home, "audit-log", "verify")
    assert engines.engines_built - before == 2  # one per command
    with Runtime(settings) as rt, rt.session() as s:
        assert s.scalar(select(Job.kind)) == "noop"
        assert s.scalar(select(AuditEntry.id).where(AuditEntry.event == "maintenance.run"))


def test_a_served_app_uses_one_engine_across_requests(settings):
    before = engines.engines_built
    app = create_app(settings)
    rt = app.state.runtime
    assert app.state.engine is rt.engine and app.state.sessionmaker is rt.sessionmaker
    with TestClient(app) as client:
        assert app.state.bus.engine is rt.engine  # the bus made here borrows it
        for _ in range(3):
            assert client.get("/health/ready").status_code in (200, 503)
            refused = client.post(
                "/api/v1/auth/token", json={"username": "nobody", "password": "wrong"}
            )
            assert refused.status_code == 401
    assert engines.engines_built - before == 1


def _dbapi_connection(rt: Runtime):
    with rt.session() as s:
        s.execute(text("SELECT 1"))
        return s.connection().connection.dbapi_connection


def test_close_disposes_the_engine_the_runtime_built(settings):
    rt = Runtime(settings)
    raw = _dbapi_connection(rt)
    raw.cursor().execute("SELECT 1")  # back in the pool, still open
    rt.close()
    with pytest.raises(Exception, match="closed"):
        raw.cursor().execute("SELECT 1")
    assert rt.closed


def test_a_borrowed_engine_is_left_to_its_owner(settings):
    owner = engines.make_engine(settings)
    try:
        rt = Runtime(settings, engine=owner)
        raw = _dbapi_connection(rt)
        rt.close()
        raw.cursor().execute("SELECT 1")  # still open: the owner disposes of it
        assert rt.engine is owner
    finally:
        owner.dispose()


def test_a_session_commits_on_success_and_rolls_back_on_an_error(settings):
    with Runtime(settings) as rt:
        with rt.session() as s:
            s.add(Job(kind="noop", params={}, owner="t", status="queued", max_attempts=1))
        with pytest.raises(RuntimeError), rt.session() as s:
            s.add(Job(kind="noop", params={}, owner="t", status="queued", max_attempts=1))
            s.flush()
            raise RuntimeError("the block failed")
        with rt.session() as s:
            assert len(s.scalars(select(Job)).all()) == 1
