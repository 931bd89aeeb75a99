"""Login sessions across key rotation, the emergency step and password resets, over real
HTTP, with a second API process (`sctk serve`) on the same database."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from sctk.ops.emergency import end_sessions
from sctk.security import audit_log, sessions
from sctk.storage.engine import session_scope
from tests.e2e.scaleout_support import Processes, clean_env, sctk_argv, wait_http
from tests.helpers import free_port, run_sctk, wait_until
from tests.security.conftest import (
    ACCOUNTS,
    GENEROUS_LIMITS,
    assert_problem,
    bearer,
    create_token,
    create_user,
    sqlite_only,
)

ADMIN = ACCOUNTS["admin"]
VIEWER = ACCOUNTS["viewer"]


@pytest.fixture
def second_api(home, tmp_path) -> Iterator[str]:
    """Another API process, `sctk serve --role api`, on the test's data directory."""
    procs = Processes(tmp_path / "procs")
    port = free_port()
    env = clean_env(SCTK_HOME=str(home), SCTK_SECURITY__AUTH_CACHE_SECONDS="1")
    procs.start("api-2", sctk_argv("serve", "--role", "api", "--port", str(port)), env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health/live", procs, "api-2")
        yield url
    finally:
        procs.close()


def _me(url: str, token: str) -> httpx.Response:
    return httpx.get(f"{url}/api/v1/me", headers=bearer(token), timeout=30)


def _ended_soon(url: str, token: str) -> None:
    """Within the credential cache's time (1 s here, plus slack) the JWT is refused."""
    r = wait_until(
        lambda: (r := _me(url, token)).status_code == 401 and r,
        timeout=8,
        what=f"{url} to refuse the ended session",
    )
    assert_problem(r, 401, "ended every login session")


@pytest.mark.parametrize("backend", ["postgres"])
def test_rotation_keeps_sessions_and_revoke_sessions_ends_them_everywhere(
    start_api, engine, home, second_api
):
    create_user(engine, ADMIN.username, ADMIN.password, ADMIN.role)
    api = start_api(**GENEROUS_LIMITS, auth_cache_seconds=1)
    before = api.login(ADMIN.username, ADMIN.password)
    token, _ = create_token(engine, ADMIN.username)
    for url in (api.url, second_api):
        assert _me(url, before).status_code == 200

    # a routine rotation: the key that signed the JWT is retired, the session goes on
    done = run_sctk("keys", "rotate", home=home)
    assert done.returncode == 0, done.stderr
    assert "kept until they expire" in done.stdout
    for url in (api.url, second_api):
        r = _me(url, before)
        assert r.status_code == 200, (url, r.text)

    # with --revoke-sessions every login JWT ends, in this process and in the other one;
    # a personal API token is not a session and keeps working
    done = run_sctk("keys", "rotate", "--revoke-sessions", home=home)
    assert done.returncode == 0, done.stderr
    assert "login sessions: all ended" in done.stdout
    for url in (api.url, second_api):
        _ended_soon(url, before)
        assert _me(url, token).status_code == 200
    # a new login works at once
    after = api.login(ADMIN.username, ADMIN.password)
    for url in (api.url, second_api):
        assert _me(url, after).status_code == 200
    with session_scope(engine) as s:
        assert audit_log.entries(s, event=sessions.SESSIONS_REVOKED)


def test_the_emergency_step_ends_every_session(start_api, engine, home):
    create_user(engine, VIEWER.username, VIEWER.password, VIEWER.role)
    api = start_api(**GENEROUS_LIMITS, auth_cache_seconds=1)
    before = api.login(VIEWER.username, VIEWER.password)
    assert _me(api.url, before).status_code == 200
    step = end_sessions(engine, actor="ops", reason="stolen laptop")
    assert step.ok and step.name == "end_sessions"
    _ended_soon(api.url, before)
    assert _me(api.url, api.login(VIEWER.username, VIEWER.password)).status_code == 200
    with session_scope(engine) as s:
        (entry, *_) = audit_log.entries(s, event=sessions.SESSIONS_REVOKED)
    assert entry.actor == "ops" and entry.details == {"reason": "stolen laptop"}


@sqlite_only
def test_a_password_reset_revokes_the_users_api_tokens(start_api, engine, home):
    create_user(engine, VIEWER.username, VIEWER.password, VIEWER.role)
    api = start_api(**GENEROUS_LIMITS, auth_cache_seconds=1)
    first, _ = create_token(engine, VIEWER.username, name="laptop")
    second, _ = create_token(engine, VIEWER.username, name="ci")
    for token in (first, second):
        assert _me(api.url, token).status_code == 200
    done = run_sctk(
        "users",
        "reset-password",
        VIEWER.username,
        "--password-stdin",
        home=home,
        input="Brand-New-Lantern-Quay-64\n",
    )
    assert done.returncode == 0, done.stderr
    assert "2 API token(s) revoked" in done.stdout, done.stdout
    for token in (first, second):
        api.refused_soon("/api/v1/me", token, "revoked")
    assert _me(api.url, api.login(VIEWER.username, "Brand-New-Lantern-Quay-64")).status_code == 200


@sqlite_only
def test_secrets_on_the_command_line_are_refused(home, engine):
    create_user(engine, VIEWER.username, VIEWER.password, VIEWER.role)
    cases = {
        ("users", "add", "dave", "--password", "Topaz-Walrus-Meridian-44"): "--password-stdin",
        ("users", "reset-password", VIEWER.username, "--password", "Topaz-Walrus-Meridian-44"): (
            "--password-stdin"
        ),
        ("alerts", "set-smtp-password", "--password", "smtp-secret-1"): "--password-stdin",
        ("alerts", "set-webhook", "https://hooks.example.org/T0/B0/secret"): "--url-stdin",
    }
    for args, flag in cases.items():
        r = run_sctk(*args, home=home)
        assert r.returncode != 0, (args, r.stdout)
        message = r.stderr.strip()
        assert "not taken on the command line" in message and flag in message, (args, message)
    # the same secrets by stdin or a file are taken
    (home / "tmp").mkdir(exist_ok=True)
    secret_file = home / "tmp" / "smtp"
    secret_file.write_text("smtp-secret-1\n")
    r = run_sctk("alerts", "set-smtp-password", "--password-file", str(secret_file), home=home)
    assert r.returncode == 0, r.stderr
    r = run_sctk(
        "users", "add", "dave", "--password-stdin", home=home, input="Topaz-Walrus-Meridian-44"
    )
    assert r.returncode == 0, r.stderr
