"""Password guessing and request floods over real HTTP: lockout, unlock, rate limits."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from sctk.security import audit
from sctk.storage.engine import session_scope
from sctk.storage.models import LoginAttempt, User, utcnow
from tests.helpers import run_sctk
from tests.security.conftest import (
    ACCOUNTS,
    assert_problem,
    bearer,
    create_token,
    create_user,
    sqlite_only,
)

VICTIM = ACCOUNTS["analyst"]
LOCKOUT = {"lockout_threshold": 3, "lockout_window_minutes": 15, "lockout_minutes": 30}


def _login(api, password: str):
    return api.http.post(
        "/api/v1/auth/token", json={"username": VICTIM.username, "password": password}
    )


def _fail(api, times: int) -> None:
    for i in range(times):
        r = _login(api, f"Not-The-Password-{i}")
        assert_problem(r, 401, "Wrong username or password.")


def _attempts(engine) -> list[tuple[bool, str]]:
    with session_scope(engine) as s:
        rows = s.scalars(
            select(LoginAttempt)
            .where(LoginAttempt.username == VICTIM.username)
            .order_by(LoginAttempt.id)
        )
        return [(a.success, a.reason) for a in rows]


def _locked_until(engine):
    with session_scope(engine) as s:
        return s.scalar(select(User.locked_until).where(User.username == VICTIM.username))


def test_lockout_after_failed_logins_then_unlock_and_expiry(start_api, engine, home):
    create_user(engine, VICTIM.username, VICTIM.password, VICTIM.role)
    api = start_api(**LOCKOUT)

    before = utcnow()
    _fail(api, LOCKOUT["lockout_threshold"])
    until = _locked_until(engine)
    assert until is not None
    lasts = until - before
    assert timedelta(minutes=30) <= lasts < timedelta(minutes=30, seconds=30), lasts

    # now even the right password is refused, with a message saying why
    r = _login(api, VICTIM.password)
    body = assert_problem(r, 401, "locked")
    assert body["title"] == "Account locked"
    assert r.headers["www-authenticate"] == "Bearer"
    assert _attempts(engine) == [
        (False, "bad password"),
        (False, "bad password"),
        (False, "bad password"),
        (False, "locked"),
    ]
    with session_scope(engine) as s:
        failed = audit.entries(s, event=audit.LOGIN_FAILED, user=VICTIM.username)
        locked = audit.entries(s, event=audit.USER_LOCKED, user=VICTIM.username)
    assert [e.details["reason"] for e in reversed(failed)] == ["bad password"] * 3 + ["locked"]
    assert all(e.client == "127.0.0.1" and e.outcome == "denied" for e in failed)
    assert len(locked) == 1 and locked[0].details == {"failures": 3}

    # an admin lifts the lock from the command line; the old failures no longer count
    done = run_sctk("users", "unlock", VICTIM.username, home=home)
    assert done.returncode == 0, done.stderr
    assert f"unlocked '{VICTIM.username}'" in done.stdout
    assert _locked_until(engine) is None
    assert api.login(VICTIM.username, VICTIM.password)
    _fail(api, 1)
    assert _locked_until(engine) is None, "one failure after an unlock must not lock again"

    # two more make three since the last good login: locked again; it ends by itself once
    # locked_until has passed
    _fail(api, 2)
    assert_problem(_login(api, VICTIM.password), 401, "locked")
    with session_scope(engine) as s:
        s.execute(
            update(User)
            .where(User.username == VICTIM.username)
            .values(locked_until=utcnow() - timedelta(seconds=1))
        )
    assert api.login(VICTIM.username, VICTIM.password)
    assert _attempts(engine)[-1] == (True, "")


def test_unknown_users_are_refused_like_wrong_passwords(start_api, engine):
    api = start_api(**LOCKOUT)
    r = api.http.post(
        "/api/v1/auth/token", json={"username": "no.such.user", "password": "whatever-12345"}
    )
    # the same answer as a wrong password: a login does not reveal which usernames exist
    assert_problem(r, 401, "Wrong username or password.")
    with session_scope(engine) as s:
        reasons = set(
            s.scalars(select(LoginAttempt.reason).where(LoginAttempt.username == "no.such.user"))
        )
        assert reasons == {"unknown user"}
        assert s.scalar(select(User).where(User.username == "no.such.user")) is None


def _assert_429(r, fragment: str) -> None:
    assert_problem(r, 429, fragment)
    retry = r.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1, retry


@sqlite_only
def test_rate_limit_per_client_address(start_api):
    api = start_api(client_rate_limit_per_minute=1, rate_limit_burst=5)
    codes = [api.http.get("/api/v1/version").status_code for _ in range(5)]
    assert codes == [401] * 5  # refused for want of a token, but let through by the limiter
    _assert_429(api.http.get("/api/v1/version"), "from this address")
    # the limit sits in front of every route, the public login included ...
    r = api.http.post("/api/v1/auth/token", json={"username": "x.y.z", "password": "p"})
    _assert_429(r, "from this address")
    # ... but never in front of the probes a load balancer polls
    for _ in range(20):
        assert api.http.get("/health/live").status_code == 200


def test_rate_limit_per_identity(start_api, engine):
    create_user(engine, VICTIM.username, VICTIM.password, VICTIM.role)
    other = ACCOUNTS["viewer"]
    create_user(engine, other.username, other.password, other.role)
    api = start_api(
        rate_limit_per_minute=1, rate_limit_burst=5, client_rate_limit_per_minute=1_000_000
    )
    login_jwt = api.login(VICTIM.username, VICTIM.password)
    api_token, _ = create_token(engine, VICTIM.username)
    # the JWT and the API token are one identity: they share a bucket
    for token in (login_jwt, api_token, login_jwt, api_token, login_jwt):
        assert api.http.get("/api/v1/me", headers=bearer(token)).status_code == 200
    _assert_429(api.http.get("/api/v1/me", headers=bearer(api_token)), "for this account")
    _assert_429(api.http.get("/api/v1/version", headers=bearer(login_jwt)), "for this account")
    # another account is not slowed down by the first one's flood
    other_token, _ = create_token(engine, other.username)
    r = api.http.get("/api/v1/me", headers=bearer(other_token))
    assert r.status_code == 200 and r.json()["username"] == other.username
