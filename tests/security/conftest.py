"""Fixtures for the security tests: one account per role, and the real API to log in to.

Hashing a password costs a noticeable fraction of a second (argon2, on purpose), so each
test makes only the accounts it needs: `accounts` makes exactly one per role, and `api`
logs each role in at most once per test.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from sctk import config
from sctk.config import Settings
from sctk.security import tokens, users
from sctk.storage.engine import make_engine, session_scope
from tests.helpers import LiveServer, wait_until

PROBLEM_JSON = "application/problem+json"
ROLES = ("viewer", "analyst", "admin")
GENEROUS_LIMITS = {
    "client_rate_limit_per_minute": 100_000,
    "rate_limit_per_minute": 100_000,
    "rate_limit_burst": 10_000,
}


# For behaviour that cannot depend on the database: run it once, on SQLite (a direct
# parametrisation overrides the parametrised `backend` fixture of tests/conftest.py).
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    role: str


# Passwords that pass the policy (12+ characters, not common, not containing the username).
ACCOUNTS = {
    "admin": Account("ada.admin", "Quartz-Harbor-Lantern-481", "admin"),
    "analyst": Account("ali.analyst", "Velvet-Orbit-Meadow-927", "analyst"),
    "viewer": Account("val.viewer", "Copper-Fjord-Thistle-356", "viewer"),
}


def create_user(engine: Engine, username: str, password: str, role: str) -> None:
    with session_scope(engine) as session:
        users.create(session, username, password, role, actor="tests")


def create_token(
    engine: Engine, username: str, expires: timedelta | None = timedelta(days=1), name: str = "t"
) -> tuple[str, tokens.TokenView]:
    """A personal API token for USERNAME made with the domain function: (plaintext, view)."""
    with session_scope(engine) as session:
        return tokens.create(session, users.get(session, username), name, expires, actor="tests")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(part: str) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def assert_problem(response: httpx.Response, status: int, *fragments: str) -> dict[str, Any]:
    """RESPONSE is an RFC 9457 problem with STATUS whose detail contains every fragment."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body = response.json()
    assert body["status"] == status, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert "Traceback" not in response.text
    for fragment in fragments:
        assert fragment in body["detail"], (fragment, body)
    return body


def assert_cli_error(result, fragment: str) -> str:
    """A refused command: non-zero exit, one sentence on stderr naming the problem."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert "Traceback" not in result.stderr
    assert message.startswith("Error: ") and "\n" not in message, message
    assert message.endswith("."), message
    assert fragment in message, (fragment, message)
    return message


@dataclass
class Api:
    """A running sctk API on the test's data directory, and helpers to talk to it."""

    server: LiveServer
    settings: Settings
    engine: Engine
    accounts: dict[str, Account] = field(default_factory=dict)
    _jwts: dict[str, str] = field(default_factory=dict)
    _client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def http(self) -> httpx.Client:
        """A shared keep-alive client, closed when the test ends."""
        if self._client is None:
            self._client = self.server.client()
        return self._client

    def login(self, username: str, password: str) -> str:
        """A JWT from POST /api/v1/auth/token; fails the test when the login is refused."""
        r = self.http.post("/api/v1/auth/token", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "bearer" and body["expires_in"] > 0, body
        return body["access_token"]

    def jwt(self, role: str) -> str:
        """The login JWT of the account holding ROLE (logged in once per test)."""
        if role not in self._jwts:
            account = self.accounts[role]
            self._jwts[role] = self.login(account.username, account.password)
        return self._jwts[role]

    def forget(self, role: str) -> None:
        """Drop ROLE's JWT (made stale by a password change); the next use logs in again."""
        self._jwts.pop(role, None)

    def headers(self, role: str) -> dict[str, str]:
        return bearer(self.jwt(role))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def refused_soon(self, path: str, token: str, *fragments: str) -> dict[str, Any]:
        """A change made outside this API process (the CLI, a direct database write) reaches
        a credential the API verified recently within security.auth_cache_seconds: poll
        for the 401 no longer than that, plus slack for a loaded machine."""
        window = self.settings.security.auth_cache_seconds + 3.0
        response = wait_until(
            lambda: (r := self.http.get(path, headers=bearer(token))).status_code == 401 and r,
            timeout=window,
            what=f"{path} to refuse the credential within {window:.0f} s",
        )
        return assert_problem(response, 401, *fragments)


@pytest.fixture
def engine(settings) -> Iterator[Engine]:
    eng = make_engine(settings)
    yield eng
    eng.dispose()


@pytest.fixture
def accounts(engine) -> dict[str, Account]:
    """One user per role (admin, analyst, viewer) on the test's data directory."""
    for account in ACCOUNTS.values():
        create_user(engine, account.username, account.password, account.role)
    return dict(ACCOUNTS)


@pytest.fixture
def start_api(settings, engine) -> Iterator:
    """start_api(**security) serves create_app on the data directory with those settings.

    Every request of a test comes from 127.0.0.1, so tests that are not about rate limits
    pass generous limits rather than risk a 429 that has nothing to do with them.
    """
    from sctk.api.app import create_app

    with ExitStack() as stack:

        def start(accounts: dict[str, Account] | None = None, **security: Any) -> Api:
            overrides = {"security": security} if security else None
            app_settings = config.load(settings.home, overrides).settings
            server = stack.enter_context(LiveServer(create_app(app_settings)))
            api = Api(server, app_settings, engine, dict(accounts or {}))
            stack.callback(api.close)
            return api

        yield start


@pytest.fixture
def api(start_api, accounts) -> Api:
    """The API with one account per role; `api.headers(role)` logs that role in."""
    return start_api(accounts, **GENEROUS_LIMITS)


def start_viewer_api(start_api, engine, **security: Any) -> Api:
    """The API (start_api's, with SECURITY over generous limits) with only the viewer."""
    viewer = ACCOUNTS["viewer"]
    create_user(engine, viewer.username, viewer.password, viewer.role)
    return start_api({"viewer": viewer}, **{**GENEROUS_LIMITS, **security})


@pytest.fixture
def viewer_api(start_api, engine) -> Api:
    """The API with only the viewer account, for tests that need no other role."""
    return start_viewer_api(start_api, engine)
