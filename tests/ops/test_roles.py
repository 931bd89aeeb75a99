"""`sctk serve --role`: which parts run in which process."""

from __future__ import annotations

from sctk.api.app import ROLE_ENV, served_app
from sctk.storage import lease
from sctk.storage.engine import session_scope
from tests.helpers import LiveServer, run_sctk, wait_until
from tests.security.conftest import sqlite_only


def scheduler_holder(engine):
    with session_scope(engine) as s:
        held = lease.current(s, "scheduler")
        return held.holder if held else None


@sqlite_only
def test_role_api_serves_without_scheduler_or_alerting(settings, engine, monkeypatch):
    monkeypatch.setenv("SCTK_HOME", str(settings.home))
    monkeypatch.setenv(ROLE_ENV, "api")
    monkeypatch.setenv("SCTK_JOBS__WORKERS", "0")
    app = served_app()
    with LiveServer(app) as server, server.client() as http:
        assert http.get("/health/live").status_code == 200
        assert app.state.collector is not None and app.state.watch is None
        assert app.state.job_workers == [] or not app.state.job_workers
    assert scheduler_holder(engine) is None


@sqlite_only
def test_role_all_runs_the_scheduler_and_alerting(settings, engine, monkeypatch):
    monkeypatch.setenv("SCTK_HOME", str(settings.home))
    monkeypatch.setenv(ROLE_ENV, "all")
    monkeypatch.setenv("SCTK_JOBS__WORKERS", "0")
    app = served_app()
    with LiveServer(app) as server, server.client() as http:
        assert http.get("/health/live").status_code == 200
        assert app.state.watch is not None
        assert wait_until(lambda: scheduler_holder(engine), what="the scheduler's lease")


@sqlite_only
def test_an_unknown_role_is_refused(settings):
    r = run_sctk("serve", "--role", "db", home=settings.home)
    assert r.returncode != 0
    assert "Unknown role 'db'; use one of all, api, worker, scheduler." in r.stderr
