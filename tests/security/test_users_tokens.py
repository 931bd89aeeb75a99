"""Accounts and personal tokens through the real CLI and over HTTP, and the input both refuse.

The CLI tests run once, on SQLite: every `sctk` subprocess costs a Python start-up, and the
domain functions they call are exercised on both backends by the API tests below.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from sctk import config
from sctk.api.app import create_app
from sctk.security import audit_log, tokens
from sctk.storage.engine import session_scope
from sctk.storage.models import ApiToken, LoginAttempt, User, utcnow
from tests.helpers import LiveServer, run_sctk
from tests.security.conftest import (
    ACCOUNTS,
    assert_cli_error,
    assert_problem,
    b64url_json,
    bearer,
    create_token,
    create_user,
    sqlite_only,
)

CAROL = "carol"
CAROL_PASSWORD = "Indigo-Marmot-Cascade-315"
CAROL_NEW_PASSWORD = "Lilac-Voyager-Basalt-862"


def _ok(result) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def _counts(engine) -> tuple[int, int]:
    with session_scope(engine) as s:
        n_users = s.scalar(select(func.count()).select_from(User))
        n_tokens = s.scalar(select(func.count()).select_from(ApiToken))
    return n_users, n_tokens


def _me(api, token: str):
    return api.http.get("/api/v1/me", headers=bearer(token))


# --- the CLI ----------------------------------------------------------------------------------


@sqlite_only
def test_cli_user_and_token_lifecycle(home, engine, start_api):
    api = start_api()
    out = _ok(
        run_sctk(
            *("users", "add", CAROL, "--role", "analyst", "--password-stdin"),
            home=home,
            input=CAROL_PASSWORD + "\n",
        )
    )
    assert f"created user '{CAROL}' (analyst)" in out

    with ThreadPoolExecutor(2) as pool:
        listed = pool.submit(run_sctk, "users", "list", "--json", home=home)
        made = pool.submit(
            run_sctk,
            *("tokens", "create", "--name", "x", "--expires", "1d", "--user", CAROL, "--json"),
            home=home,
        )
    people = {u["username"]: u for u in json.loads(_ok(listed.result()))}
    assert people[CAROL]["role"] == "analyst" and people[CAROL]["disabled"] is False
    assert not any("hash" in key or "password" in key for key in people[CAROL])
    created = json.loads(_ok(made.result()))
    token = created["token"]
    assert created["username"] == CAROL and created["name"] == "x"
    assert token.startswith(created["prefix"] + "_")
    expires = datetime.fromisoformat(created["expires_at"])
    assert abs(expires - utcnow() - timedelta(days=1)) < timedelta(minutes=5)

    # the token works over HTTP, and its use is recorded
    r = _me(api, token)
    assert r.status_code == 200 and r.json()["username"] == CAROL, r.text
    login_jwt = api.login(CAROL, CAROL_PASSWORD)
    with session_scope(engine) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.id == created["id"]))
        assert row.last_used_at is not None and row.last_used_from == "127.0.0.1"

    # each phase runs its commands in parallel: a Python start-up per command adds up
    with ThreadPoolExecutor(3) as pool:
        listed = pool.submit(run_sctk, "tokens", "list", "--json", home=home)
        role = pool.submit(run_sctk, "users", "set-role", CAROL, "viewer", home=home)
        disabled = pool.submit(run_sctk, "users", "disable", CAROL, home=home)
    # shown once: the list has neither the token nor its hash
    text = _ok(listed.result())
    assert token not in text and tokens.hash_token(token) not in text
    # the secret part (after "<prefix>_"; it may itself contain "_", so not split on it)
    secret = token.removeprefix(created["prefix"] + "_")
    assert len(secret) >= 40 and secret not in text
    (entry,) = [t for t in json.loads(text) if t["id"] == created["id"]]
    assert entry["state"] == "active" and entry["last_used_at"] is not None
    assert "token" not in entry and "token_hash" not in entry
    assert f"'{CAROL}' is now viewer" in _ok(role.result())
    # a disabled account's JWT and API token stop working at once
    assert f"disabled '{CAROL}'" in _ok(disabled.result())
    api.refused_soon("/api/v1/me", login_jwt, "disabled")
    api.refused_soon("/api/v1/me", token, "disabled")

    with ThreadPoolExecutor(3) as pool:
        enabled = pool.submit(run_sctk, "users", "enable", CAROL, home=home)
        reset = pool.submit(
            run_sctk,
            *("users", "reset-password", CAROL, "--password-stdin"),
            home=home,
            input=CAROL_NEW_PASSWORD,
        )
        revoked = pool.submit(run_sctk, "tokens", "revoke", str(created["id"]), home=home)
    assert f"enabled '{CAROL}'" in _ok(enabled.result())
    assert f"password of '{CAROL}' changed" in _ok(reset.result())
    out = _ok(revoked.result())
    assert f"revoked token {created['id']} ({created['prefix']}) of {CAROL}" in out
    api.refused_soon("/api/v1/me", token, "revoked")
    # the JWT issued before the reset is refused, the old password too; the new one works
    api.refused_soon("/api/v1/me", login_jwt, "password changed")
    r = api.http.post("/api/v1/auth/token", json={"username": CAROL, "password": CAROL_PASSWORD})
    assert_problem(r, 401, "Wrong username or password.")
    me = _me(api, api.login(CAROL, CAROL_NEW_PASSWORD))
    assert me.status_code == 200 and me.json()["role"] == "viewer"
    assert "data.write" not in me.json()["permissions"]  # an analyst's, no longer hers
    with session_scope(engine) as s:
        events = [e.event for e in reversed(audit_log.entries(s, user=CAROL))]
    for event in (
        audit_log.USER_CREATED,
        audit_log.TOKEN_CREATED,
        audit_log.USER_ROLE_CHANGED,
        audit_log.USER_DISABLED,
        audit_log.USER_ENABLED,
        audit_log.USER_PASSWORD_RESET,
        audit_log.TOKEN_REVOKED,
    ):
        assert event in events, (event, events)


@sqlite_only
def test_cli_refuses_bad_input_and_changes_nothing(home, engine):
    create_user(engine, CAROL, CAROL_PASSWORD, "viewer")
    before = _counts(engine)
    with session_scope(engine) as s:
        carol_before = s.scalar(select(User.password_hash).where(User.username == CAROL))
    add = ("users", "add")
    good = "Topaz-Walrus-Meridian-44"
    # (arguments, what stdin holds, the sentence)
    cases = {
        "short": ((*add, "dave", "--password-stdin"), "Sh0rt-pw", "at least 12 characters"),
        "has username": (
            (*add, "dave", "--password-stdin"),
            "xx-dave-Harbor-91",
            "must not contain the username",
        ),
        "common": ((*add, "dave", "--password-stdin"), "password12345", "too common"),
        "duplicate": (
            (*add, CAROL, "--password-stdin"),
            good,
            f"A user named '{CAROL}' already exists",
        ),
        "unknown role": (
            (*add, "dave", "--role", "superuser", "--password-stdin"),
            good,
            "Unknown role 'superuser'; choose one of: viewer, analyst, admin.",
        ),
        "invalid username": (
            (*add, "Dave Smith", "--password-stdin"),
            good,
            "Invalid username 'Dave Smith'",
        ),
        "empty stdin": ((*add, "dave", "--password-stdin"), "", "No password in standard input"),
        "bad expiry": (
            ("tokens", "create", "--name", "x", "--user", CAROL, "--expires", "soon"),
            None,
            "Invalid expiry 'soon'",
        ),
    }
    with ThreadPoolExecutor(4) as pool:
        results = {
            name: pool.submit(run_sctk, *args, home=home, input=stdin)
            for name, (args, stdin, _) in cases.items()
        }
    for name, (_, _, fragment) in cases.items():
        assert_cli_error(results[name].result(), fragment)
    assert _counts(engine) == before
    with session_scope(engine) as s:
        carol = s.scalar(select(User).where(User.username == CAROL))
        assert (carol.role, carol.password_hash) == ("viewer", carol_before)


def test_init_shows_a_generated_admin_password_once_and_refuses_a_weak_one(tmp_path):
    fresh, refused = tmp_path / "fresh", tmp_path / "refused"
    with ThreadPoolExecutor(2) as pool:
        made = pool.submit(run_sctk, "init", str(fresh))
        weak = pool.submit(
            run_sctk, "init", str(refused), env={"SCTK_ADMIN_PASSWORD": "admin1234567"}
        )
    out = _ok(made.result())
    found = re.findall(r"with password: (\S+)", out)
    assert len(found) == 1, out
    password = found[0]
    assert out.count(password) == 1, "the generated password is printed exactly once"
    assert "shown only once" in out
    logged = "".join(p.read_text() for p in (fresh / "logs").glob("*") if p.is_file())
    assert password not in logged

    message = assert_cli_error(weak.result(), "SCTK_ADMIN_PASSWORD is not acceptable")
    assert "admin1234567" not in message
    assert not refused.exists(), "a refused init must create nothing"

    settings = config.load(fresh).settings
    with LiveServer(create_app(settings)) as server, server.client() as c:
        r = c.post("/api/v1/auth/token", json={"username": "admin", "password": password})
        assert r.status_code == 200, r.text
        me = c.get("/api/v1/me", headers=bearer(r.json()["access_token"])).json()
    assert me["username"] == "admin" and me["role"] == "admin"


# --- the API ----------------------------------------------------------------------------------


def test_api_tokens_create_list_and_revoke(api):
    viewer = api.accounts["viewer"]
    r = api.http.post(
        "/api/v1/tokens", json={"name": "laptop", "expires": "2w"}, headers=api.headers("viewer")
    )
    assert r.status_code == 201, r.text
    made = r.json()
    token = made["token"]
    assert made["username"] == viewer.username and made["state"] == "active"
    assert made["last_used_at"] is None
    expires = datetime.fromisoformat(made["expires_at"])
    assert abs(expires - utcnow() - timedelta(weeks=2)) < timedelta(minutes=5)

    assert _me(api, token).json()["username"] == viewer.username
    r = api.http.get("/api/v1/tokens", headers=bearer(token))
    assert r.status_code == 200
    assert token not in r.text and tokens.hash_token(token) not in r.text
    (listed,) = r.json()
    assert listed["id"] == made["id"] and listed["last_used_at"] is not None
    assert "token" not in listed

    # someone else's token: invisible and irrevocable for a viewer, revocable by an admin
    admin_token, admin_view = create_token(api.engine, api.accounts["admin"].username)
    viewer_spare, viewer_spare_view = create_token(api.engine, viewer.username)
    r = api.http.get("/api/v1/tokens?all=true", headers=bearer(token))
    assert {t["username"] for t in r.json()} == {viewer.username}
    r = api.http.delete(f"/api/v1/tokens/{admin_view.id}", headers=bearer(token))
    assert_problem(r, 404, f"No API token with id {admin_view.id}")
    assert _me(api, admin_token).status_code == 200
    r = api.http.get("/api/v1/tokens?all=true", headers=bearer(admin_token))
    assert {t["username"] for t in r.json()} == {viewer.username, api.accounts["admin"].username}
    r = api.http.delete(f"/api/v1/tokens/{viewer_spare_view.id}", headers=bearer(admin_token))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert_problem(_me(api, viewer_spare), 401, "revoked")

    # one's own token, with itself
    r = api.http.delete(f"/api/v1/tokens/{made['id']}", headers=bearer(token))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    assert_problem(_me(api, token), 401, "revoked")

    # refused input creates nothing
    before = _counts(api.engine)
    jwt_headers = api.headers("viewer")
    for body, status, fragment in (
        ({"name": "x", "expires": "soon"}, 400, "Invalid expiry 'soon'"),
        ({"name": "x", "expires": "20y"}, 400, "more than 3650 days"),
        ({"name": "   "}, 400, "1 to 100 characters"),
        ({"name": "x", "scope": "all"}, 422, "Invalid scope"),
        ({"expires": "1d"}, 422, "Invalid name"),
    ):
        r = api.http.post("/api/v1/tokens", json=body, headers=jwt_headers)
        assert_problem(r, status, fragment)
    assert _counts(api.engine) == before


def test_api_change_own_password(api):
    viewer = api.accounts["viewer"]
    old_jwt = api.jwt("viewer")
    headers = bearer(old_jwt)

    def change(current: str, new: str):
        return api.http.post(
            "/api/v1/me/password",
            json={"current_password": current, "new_password": new},
            headers=headers,
        )

    with session_scope(api.engine) as s:
        old_hash = s.scalar(select(User.password_hash).where(User.username == viewer.username))
    assert_problem(
        change("Not-My-Password-1", CAROL_NEW_PASSWORD), 400, "current password is wrong"
    )
    assert_problem(change(viewer.password, "short-1"), 400, "at least 12 characters")
    assert_problem(change(viewer.password, "val.viewer-Otter-33"), 400, "username")
    assert_problem(change(viewer.password, "Password2024!"), 400, "too common")
    with session_scope(api.engine) as s:
        assert (
            s.scalar(select(User.password_hash).where(User.username == viewer.username)) == old_hash
        )
        # the wrong current password counts as a failed login, as on POST /auth/token:
        # otherwise a stolen token could guess the password with no lockout ever
        failed = s.scalars(
            select(LoginAttempt.reason).where(
                LoginAttempt.username == viewer.username, LoginAttempt.success.is_(False)
            )
        ).all()
        assert failed == ["bad password"]

    # at once: a token from the same second as the change is refused too
    r = change(viewer.password, CAROL_NEW_PASSWORD)
    assert r.status_code == 204, r.text
    assert_problem(_me(api, old_jwt), 401, "password changed")
    r = api.http.post(
        "/api/v1/auth/token", json={"username": viewer.username, "password": viewer.password}
    )
    assert_problem(r, 401, "Wrong username or password.")
    assert _me(api, api.login(viewer.username, CAROL_NEW_PASSWORD)).status_code == 200


def test_a_password_reset_refuses_tokens_of_the_same_second_and_no_later_ones(settings, engine):
    import jwt as pyjwt

    from sctk.security import users
    from sctk.security.keyring import Keyring

    ring = Keyring.load(settings.home)
    create_user(engine, CAROL, CAROL_PASSWORD, "viewer")
    with session_scope(engine) as s:
        user = users.get(s, CAROL)
        before, _ = tokens.issue_jwt(ring, user, timedelta(minutes=5))
        # an older sctk's token, without the password claim, issued seconds before the reset:
        # judged by its issue second
        claims = b64url_json(before.split(".")[1])
        kid, key = ring.jwt_key()
        legacy = pyjwt.encode(
            {
                **{k: v for k, v in claims.items() if k != tokens.PASSWORD_CLAIM},
                "iat": claims["iat"] - 5,
            },
            key,
            algorithm="HS256",
            headers={"kid": str(kid)},
        )
        users.reset_password(s, CAROL, CAROL_NEW_PASSWORD, actor="tests")
        s.flush()
        after, _ = tokens.issue_jwt(ring, user, timedelta(minutes=5))
    with session_scope(engine) as s:
        with pytest.raises(users.AuthenticationFailed, match="password changed"):
            tokens.authenticate_jwt(s, ring, before)
        with pytest.raises(users.AuthenticationFailed, match="password changed"):
            tokens.authenticate_jwt(s, ring, legacy)
        assert tokens.authenticate_jwt(s, ring, after)[0].username == CAROL


def test_api_refuses_bad_user_input_and_changes_nothing(start_api, engine):
    admin = ACCOUNTS["admin"]
    create_user(engine, admin.username, admin.password, "admin")
    api = start_api(max_body_bytes=4096)
    headers = bearer(api.login(admin.username, admin.password))
    before = _counts(engine)
    ok_password = "Topaz-Walrus-Meridian-44"

    def post(body):
        return api.http.post("/api/v1/users", json=body, headers=headers)

    for body, fragment in (
        ({"username": "dave", "password": "Sh0rt-pw"}, "at least 12 characters"),
        ({"username": "dave", "password": "xx-dave-Harbor-91"}, "must not contain the username"),
        ({"username": "dave", "password": "password12345"}, "too common"),
        ({"username": admin.username, "password": ok_password}, "already exists"),
    ):
        assert_problem(post(body), 400, fragment)

    for body, field in (
        ({"username": "dave", "password": ok_password, "role": "superuser"}, "role"),
        ({"username": "Dave Smith", "password": ok_password}, "username"),
        ({"username": "dave", "password": ok_password, "is_admin": True}, "is_admin"),
        ({"username": "dave"}, "password"),
    ):
        problem = assert_problem(post(body), 422, f"Invalid {field}:")
        assert problem["errors"][0]["field"] == field, problem
    r = api.http.patch("/api/v1/users/dave", json={"role": "root"}, headers=headers)
    assert assert_problem(r, 422, "Invalid role:")["errors"][0]["field"] == "role"

    # bodies over max_body_bytes, announced or not
    huge = {"username": "dave", "password": ok_password, "padding": "x" * 8000}
    raw = json.dumps(huge).encode()
    r = api.http.post(
        "/api/v1/users",
        content=raw,
        headers={**headers, "Content-Type": "application/json"},
    )
    assert "content-length" in {k.lower() for k in r.request.headers}
    assert_problem(r, 413, "larger than the limit of 4096 bytes")

    def chunks():
        for i in range(0, len(raw), 1000):
            yield raw[i : i + 1000]

    r = api.http.post(
        "/api/v1/users",
        content=chunks(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "larger than the limit of 4096 bytes")

    assert _counts(engine) == before
    with session_scope(engine) as s:
        assert s.scalar(select(User).where(User.username == "dave")) is None
