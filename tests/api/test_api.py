"""The API over real HTTP: health probes, version, problem+json errors, request ids, docs."""

from __future__ import annotations

import json
import logging
import platform
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from sctk import __version__, config, logs
from sctk.api.app import create_app
from sctk.config import Settings
from sctk.ops.init_home import init_home
from sctk.storage import migrate
from sctk.storage.engine import make_engine, session_scope
from tests.helpers import CALM_MACHINE, LiveServer, free_port, wait_until

PROBLEM_JSON = "application/problem+json"
PLATFORM_CHECKS = {"database", "migrations", "disk", "data_dir", "logs_dir"}


@pytest.fixture
def sqlite_settings(tmp_path) -> Settings:
    """For behaviour that does not depend on the database backend."""
    _report, settings = init_home(tmp_path / "sqlite-home")
    return settings


@pytest.fixture
def sqlite_app(sqlite_settings) -> Iterator[LiveServer]:
    with LiveServer(create_app(sqlite_settings)) as server:
        yield server


def configure_json_log(settings: Settings) -> Path:
    path = logs.configure(settings, console=False)
    assert path == settings.home / "logs" / "sctk.log"
    return path


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """logs.configure changes the root logger of this process; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    return body


def viewer_token(settings: Settings) -> str:
    """A personal API token of a read-only user, made the way `sctk tokens create` makes it."""
    from sctk.security import tokens, users

    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            user = users.create(session, "vera", "Quiet-Lantern-Orbit-47", "viewer", actor="test")
            plaintext, _view = tokens.create(session, user, "api tests", None, actor="test")
    finally:
        engine.dispose()
    return plaintext


def test_live(sqlite_app):
    with sqlite_app.client() as client:
        response = client.get("/health/live")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok"}


def test_ready(settings, monkeypatch):
    # backups configured: without a passphrase the backup check WARNs
    monkeypatch.setenv("SCTK_BACKUP_PASSPHRASE", "amber-lattice-tundra-0451")
    app = create_app(config.load(settings.home, CALM_MACHINE).settings)
    token = viewer_token(settings)
    with LiveServer(app) as server, server.client() as client:
        response = client.get("/health/ready", headers={"Authorization": f"Bearer {token}"})
        anonymous = client.get("/health/ready")
        stale = client.get("/health/ready", headers={"Authorization": "Bearer not-a-token"})
    assert response.status_code == 200, response.text
    body = response.json()
    checks = {c["name"]: c for c in body["checks"]}
    assert body["status"] == "OK", {n: c["message"] for n, c in checks.items()}
    assert set(checks) >= PLATFORM_CHECKS
    assert {c["status"] for c in checks.values()} <= {"OK", "WARNING"}
    assert checks["migrations"]["values"]["current"] == migrate.head()
    assert all({"message", "values", "duration_ms"} <= set(c) for c in checks.values())
    assert str(settings.home) in response.text  # the signed-in report names the data directory
    # a stranger (or a probe with a bad token) learns each check's name and status, no more:
    # no absolute path, no process id
    for r in (anonymous, stale):
        assert r.status_code == 200, r.text
        shown = r.json()
        assert shown["status"] == "OK"
        assert {c["name"]: c["status"] for c in shown["checks"]} == {
            n: c["status"] for n, c in checks.items()
        }
        assert all(set(c) == {"name", "status"} for c in shown["checks"])
        assert str(settings.home) not in r.text and "/tmp" not in r.text
        assert not re.search(r"\bpid\b", r.text)


def test_version(live_app, settings, backend):
    token = viewer_token(settings)
    with live_app.client() as client:
        anonymous = client.get("/api/v1/version")
        response = client.get("/api/v1/version", headers={"Authorization": f"Bearer {token}"})
    assert_problem(anonymous, 401)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "version": __version__,
        "python": platform.python_version(),
        "schema_head": migrate.head(),
        "database": "sqlite" if backend == "sqlite" else "postgresql",
    }


def test_ready_is_503_when_database_unreachable(sqlite_settings, monkeypatch):
    # the app waits for its bus's LISTEN at start, which never comes here: not for 10 s
    monkeypatch.setattr("sctk.bus.bus.LISTEN_WAIT_SECONDS", 0.5)
    port = free_port()
    settings = config.load(
        sqlite_settings.home, {"database_url": f"postgresql://sctk:hidden-pw@127.0.0.1:{port}/sctk"}
    ).settings
    with LiveServer(create_app(settings)) as server, server.client() as client:
        response = client.get("/health/ready")
        live = client.get("/health/live")
    body = assert_problem(response, 503)
    assert body["title"] == "Service not ready"
    assert body["health"] == "CRITICAL"
    # anonymous (and with the database down no credential can be checked): the failing
    # checks by name, without the address the messages give
    assert body["detail"].startswith("Not ready; failing checks: database, migrations")
    assert f"127.0.0.1:{port}" not in response.text
    assert "hidden-pw" not in response.text
    checks = {c["name"]: c["status"] for c in body["checks"]}
    assert checks["database"] == "CRITICAL"
    assert checks["migrations"] == "UNKNOWN"
    assert checks["data_dir"] == "OK"
    # liveness does no I/O: the process still answers
    assert live.status_code == 200


def test_unknown_path_is_404_problem(sqlite_app):
    with sqlite_app.client() as client:
        response = client.get("/no/such/thing")
    body = assert_problem(response, 404)
    assert body["title"] == "Not Found"
    assert body["request_id"] == response.headers["x-request-id"]


def test_wrong_method_is_405_problem(sqlite_app):
    with sqlite_app.client() as client:
        response = client.post("/health/live", json={})
    body = assert_problem(response, 405)
    assert body["title"] == "Method Not Allowed"
    assert response.headers["allow"] == "GET"


def test_unhandled_error_is_500_problem_without_details(sqlite_settings):
    log_path = configure_json_log(sqlite_settings)
    app = create_app(sqlite_settings)

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom-internal-detail")

    with LiveServer(app) as server, server.client() as client:
        response = client.get("/boom", headers={"X-Request-ID": "req-boom-1"})
        after = client.get("/health/live")  # the server keeps serving

    body = assert_problem(response, 500)
    for leak in ("Traceback", "kaboom-internal-detail", "RuntimeError", "boom()", ".py"):
        assert leak not in response.text
    assert body["title"] == "Internal Server Error"
    assert after.status_code == 200
    # the client gets the id the error was logged under, so the two can be matched
    assert response.headers["x-request-id"] == "req-boom-1"
    assert body["request_id"] == "req-boom-1"

    def logged_error():
        return [
            e
            for e in log_lines(log_path)
            if e.get("request_id") == "req-boom-1" and e["level"] == "ERROR"
        ]

    errors = wait_until(logged_error, timeout=5, what="the error in sctk.log")
    assert "kaboom-internal-detail" in errors[0]["exception"]


def test_request_id_echoed_generated_and_logged(sqlite_app, sqlite_settings):
    log_path = configure_json_log(sqlite_settings)
    given = "client-req.42_A-b"
    path = "/api/v1/version"  # unauthenticated: answered 401, and logged like any request
    with sqlite_app.client() as client:
        probe = client.get("/health/live", headers={"X-Request-ID": "a-health-probe"})
        echoed = client.get(path, headers={"X-Request-ID": given})
        generated = client.get(path)
        replaced = client.get(path, headers={"X-Request-ID": "no spaces; or ;"})
        too_long = client.get(path, headers={"X-Request-ID": "x" * 65})

    assert probe.headers["x-request-id"] == "a-health-probe"
    assert echoed.headers["x-request-id"] == given
    ids = [r.headers["x-request-id"] for r in (generated, replaced, too_long)]
    for rid in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
    assert len(set(ids)) == 3

    def access_lines():
        entries = [e for e in log_lines(log_path) if e["logger"] == "sctk.access"]
        return entries if len(entries) >= 4 else None

    entries = wait_until(access_lines, timeout=5, what="four access lines in sctk.log")
    by_id = {e["request_id"]: e for e in entries}
    # an answered health probe is a DEBUG line, below the log's INFO level: load balancers
    # poll them every few seconds and would drown the requests people made
    assert set(by_id) == {given, *ids}
    line = by_id[given]
    assert (line["method"], line["path"], line["status"]) == ("GET", path, 401)
    assert line["level"] == "INFO"
    assert line["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])


def test_docs_and_openapi(sqlite_app):
    with sqlite_app.client() as client:
        docs = client.get("/docs")
        spec = client.get("/openapi.json")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    assert "/openapi.json" in docs.text
    assert spec.status_code == 200
    document = spec.json()
    assert document["info"]["title"] == "sctk"
    assert document["info"]["version"] == __version__
    assert {"/health/live", "/health/ready", "/api/v1/version"} <= set(document["paths"])
