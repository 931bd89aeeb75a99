"""Password guessing and request floods over real HTTP: throttles, unlock, rate limits."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select

from sctk.security import audit_log
from sctk.security.proxies import client_address, parse_networks
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
OWNER = ACCOUNTS["admin"]
LOCKOUT = {"lockout_threshold": 3, "lockout_window_minutes": 15, "lockout_minutes": 30}
# The tests' requests all come from 127.0.0.1: trusting it as a proxy lets X-Forwarded-For
# play clients at other addresses.
BEHIND_PROXY = {**LOCKOUT, "trusted_proxies": ["127.0.0.1"]}
STRANGER = "203.0.113.9"
OWNER_ADDRESS = "198.51.100.20"


def _login(api, password: str, username: str = VICTIM.username, client: str | None = None):
    headers = {"X-Forwarded-For": client} if client else {}
    return api.http.post(
        "/api/v1/auth/token", json={"username": username, "password": password}, headers=headers
    )


def _fail(api, times: int, username: str = VICTIM.username, client: str | None = None) -> None:
    for i in range(times):
        r = _login(api, f"Not-The-Password-{i}", username, client)
        assert_problem(r, 401, "Wrong username or password.")


def _attempts(engine, username: str = VICTIM.username) -> list[tuple[bool, str]]:
    with session_scope(engine) as s:
        rows = s.scalars(
            select(LoginAttempt).where(LoginAttempt.username == username).order_by(LoginAttempt.id)
        )
        return [(a.success, a.reason) for a in rows]


def _locked_until(engine, username: str = VICTIM.username):
    with session_scope(engine) as s:
        return s.scalar(select(User.locked_until).where(User.username == username))


def _throttled(r, fragment: str = "from this address") -> int:
    """R is the 429 of a throttled login; returns its Retry-After in seconds."""
    body = assert_problem(r, 429, fragment)
    assert body["title"] == "Too many failed logins"
    retry = r.headers["retry-after"]
    assert retry.isdigit() and int(retry) >= 1, retry
    return int(retry)


def _age_attempts(engine, username: str, seconds: float) -> None:
    """Move USERNAME's recorded attempts SECONDS into the past: a delay passes at once."""
    with session_scope(engine) as s:
        for attempt in s.scalars(select(LoginAttempt).where(LoginAttempt.username == username)):
            attempt.at -= timedelta(seconds=seconds)


def test_a_stranger_cannot_lock_the_owner_out(start_api, engine):
    create_user(engine, OWNER.username, OWNER.password, OWNER.role)
    api = start_api(**BEHIND_PROXY)
    # a stranger guesses at the admin account many times from one address ...
    _fail(api, LOCKOUT["lockout_threshold"], OWNER.username, STRANGER)
    for _ in range(20):
        _throttled(_login(api, "Still-Not-It-000", OWNER.username, STRANGER))
    # ... and even the right password is refused to that address while it waits
    _throttled(_login(api, OWNER.password, OWNER.username, STRANGER))
    # the owner, from another address, logs in as usual; the account is not locked
    r = _login(api, OWNER.password, OWNER.username, OWNER_ADDRESS)
    assert r.status_code == 200, r.text
    assert _locked_until(engine, OWNER.username) is None
    with session_scope(engine) as s:
        failed = audit_log.entries(s, event=audit_log.LOGIN_FAILED, user=OWNER.username)
    assert {e.client for e in failed} == {STRANGER}


def test_delays_grow_per_address_and_an_admin_unlock_lifts_them(start_api, engine, home):
    create_user(engine, VICTIM.username, VICTIM.password, VICTIM.role)
    api = start_api(**{**BEHIND_PROXY, "lockout_minutes": 5}, lockout_delay_seconds=60)
    _fail(api, 3, client=STRANGER)
    assert 55 <= _throttled(_login(api, VICTIM.password, client=STRANGER)) <= 60
    # the first delay passes: one more guess is allowed, and the next delay is twice as long
    _age_attempts(engine, VICTIM.username, 61)
    _fail(api, 1, client=STRANGER)
    assert 115 <= _throttled(_login(api, VICTIM.password, client=STRANGER)) <= 120
    _age_attempts(engine, VICTIM.username, 121)
    _fail(api, 1, client=STRANGER)
    assert 235 <= _throttled(_login(api, VICTIM.password, client=STRANGER)) <= 240
    # refusals while waiting are recorded, but are not guesses: they do not lengthen the wait
    assert _attempts(engine)[-2:] == [(False, "bad password"), (False, "locked")]
    # the doubling stops at lockout_minutes
    _age_attempts(engine, VICTIM.username, 241)
    _fail(api, 1, client=STRANGER)
    assert 295 <= _throttled(_login(api, VICTIM.password, client=STRANGER)) <= 5 * 60
    assert _locked_until(engine) is None  # only that address waits; the account is not locked

    # an admin lifts the wait from the command line; the old failures no longer count
    done = run_sctk("users", "unlock", VICTIM.username, home=home)
    assert done.returncode == 0, done.stderr
    assert f"unlocked '{VICTIM.username}'" in done.stdout
    _fail(api, 2, client=STRANGER)
    r = _login(api, VICTIM.password, client=STRANGER)
    assert r.status_code == 200, "two failures after an unlock must not throttle again"


def test_many_addresses_lock_the_account_but_not_for_its_owner(start_api, engine):
    create_user(engine, OWNER.username, OWNER.password, OWNER.role)
    api = start_api(**BEHIND_PROXY, account_lockout_threshold=7)
    # the owner has logged in from home before
    assert _login(api, OWNER.password, OWNER.username, OWNER_ADDRESS).status_code == 200
    # a botnet: several addresses, three guesses each (the per-address threshold), until
    # the seventh guess from everywhere together locks the account
    before = utcnow()
    for n, guesses in enumerate((3, 3, 1), start=1):
        _fail(api, guesses, OWNER.username, f"203.0.113.{n}")
    _throttled(_login(api, "One-More-Guess-77", OWNER.username, "203.0.113.4"), "account")
    until = _locked_until(engine, OWNER.username)
    assert until is not None
    assert timedelta(minutes=30) <= until - before < timedelta(minutes=30, seconds=30)
    # a new address is refused for the account as a whole, even with the right password ...
    r = _login(api, OWNER.password, OWNER.username, "192.0.2.77")
    assert _throttled(r, "for this account") > 29 * 60
    # ... but the owner's own address still gets in
    assert _login(api, OWNER.password, OWNER.username, OWNER_ADDRESS).status_code == 200
    with session_scope(engine) as s:
        locked = audit_log.entries(s, event=audit_log.USER_LOCKED, user=OWNER.username)
    assert len(locked) == 1 and locked[0].details == {"failures": 7}


def _comparable(r) -> tuple[int, bytes, dict[str, str]]:
    """What must be equal: all but the request id and the times (a Retry-After counts down
    between two requests on a loaded machine; it is compared within a second apart)."""
    skip = ("date", "x-request-id", "retry-after")
    headers = {k: v for k, v in r.headers.items() if k.lower() not in skip}
    return r.status_code, r.content, headers


def test_unknown_and_known_users_get_byte_identical_answers(start_api, engine):
    create_user(engine, VICTIM.username, VICTIM.password, VICTIM.role)
    api = start_api(**LOCKOUT)
    unknown = "no.such.user"

    def answer(username: str):
        return api.http.post(
            "/api/v1/auth/token",
            json={"username": username, "password": "Wrong-Guess-Every-Time-1"},
            headers={"X-Request-ID": "same-id-for-both"},
        )

    # wrong guesses, then the throttle: every answer the same for both names, byte for byte
    for _ in range(LOCKOUT["lockout_threshold"] + 2):
        known, other = answer(VICTIM.username), answer(unknown)
        assert _comparable(known) == _comparable(other)
        waits = [r.headers.get("retry-after") for r in (known, other)]
        assert waits == [None, None] or abs(int(waits[0]) - int(waits[1])) <= 1, waits
    assert known.status_code == 429, known.text
    with session_scope(engine) as s:
        reasons = set(
            s.scalars(select(LoginAttempt.reason).where(LoginAttempt.username == unknown))
        )
        assert reasons == {"unknown user", "locked"}
        assert s.scalar(select(User).where(User.username == unknown)) is None


def test_an_unknown_user_takes_as_long_as_a_known_one(start_api, engine):
    create_user(engine, VICTIM.username, VICTIM.password, VICTIM.role)
    api = start_api(**{**LOCKOUT, "lockout_threshold": 100})

    def seconds(username: str) -> float:
        started = time.perf_counter()
        r = _login(api, "Wrong-Guess-Every-Time-1", username)
        assert r.status_code == 401
        return time.perf_counter() - started

    # taken in turn, and the fastest of each: load on the machine only ever adds time, so
    # the minimum is what the server itself spends (a median still failed once under load)
    known, unknown = [], []
    for _ in range(4):
        known.append(seconds(VICTIM.username))
        unknown.append(seconds("no.such.user"))
    # both pay one argon2 verification (tenths of a second); without the dummy hash an
    # unknown name would answer in about a millisecond
    assert min(unknown) > 0.5 * min(known), (known, unknown)


def test_x_forwarded_for_is_ignored_without_trusted_proxies(start_api, engine):
    create_user(engine, VICTIM.username, VICTIM.password, VICTIM.role)
    api = start_api(**LOCKOUT)  # security.trusted_proxies empty: the default
    _fail(api, 3, client=STRANGER)
    # another "address" in the header is the same client: it waits as well
    _throttled(_login(api, VICTIM.password, client=OWNER_ADDRESS))
    with session_scope(engine) as s:
        failed = audit_log.entries(s, event=audit_log.LOGIN_FAILED, user=VICTIM.username)
    assert {e.client for e in failed} == {"127.0.0.1"}


def test_a_trusted_proxy_names_the_client_and_a_client_cannot_prepend_one(start_api, engine):
    create_user(engine, VICTIM.username, VICTIM.password, VICTIM.role)
    api = start_api(**BEHIND_PROXY, client_rate_limit_per_minute=1, rate_limit_burst=2)
    # the proxy appends the address it saw; what the client wrote to its left is not believed
    _fail(api, 1, client=f"{OWNER_ADDRESS}, {STRANGER}")
    with session_scope(engine) as s:
        failed = audit_log.entries(s, event=audit_log.LOGIN_FAILED, user=VICTIM.username)
    assert [e.client for e in failed] == [STRANGER]
    # the per-address rate limit counts each client behind the proxy on its own
    stranger = {"X-Forwarded-For": STRANGER}
    assert api.http.get("/api/v1/version", headers=stranger).status_code == 401
    _assert_429(api.http.get("/api/v1/version", headers=stranger), "from this address")
    owner = {"X-Forwarded-For": OWNER_ADDRESS}
    assert [api.http.get("/api/v1/version", headers=owner).status_code for _ in range(2)] == [
        401,
        401,
    ]


def test_client_address_walks_the_proxy_chain_from_the_right():
    nets = parse_networks(["10.0.0.0/8", "127.0.0.1"])
    assert client_address("127.0.0.1", "198.51.100.1", nets) == "198.51.100.1"
    # proxies in a chain are skipped; the first untrusted hop from the right is the client
    assert client_address("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3", nets) == "198.51.100.1"
    # a peer that is no proxy is the client, whatever it writes
    assert client_address("192.0.2.1", "198.51.100.1", nets) == "192.0.2.1"
    assert client_address("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"
    # a garbled hop ends the walk at the last address believed
    assert client_address("127.0.0.1", "198.51.100.1, bogus", nets) == "127.0.0.1"


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
