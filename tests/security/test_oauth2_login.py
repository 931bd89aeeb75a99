"""The OAuth2 password flow on POST /api/v1/auth/token over real HTTP: the form logs in like
the JSON body (same lockout, same audit), bad forms are one-sentence problems, and the
OpenAPI document declares the flow so that /docs can log in with it."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from sctk.storage.engine import session_scope
from sctk.storage.models import AuditEntry, LoginAttempt
from tests.security.conftest import ACCOUNTS, assert_problem, bearer, create_user, sqlite_only

TOKEN = "/api/v1/auth/token"
USER = ACCOUNTS["analyst"]
LOCKOUT = {"lockout_threshold": 3, "lockout_window_minutes": 15, "lockout_minutes": 30}


def _form(api, **fields: str):
    """POST FIELDS form-encoded, as Swagger UI and OAuth2 client libraries send them."""
    return api.http.post(TOKEN, data=fields)


def _password_form(password: str = USER.password, **extra: str) -> dict[str, str]:
    return {"grant_type": "password", "username": USER.username, "password": password, **extra}


def _attempts(engine) -> list[tuple[bool, str]]:
    with session_scope(engine) as s:
        rows = s.scalars(select(LoginAttempt).order_by(LoginAttempt.id))
        return [(a.success, a.reason) for a in rows]


def _audited(engine, action: str) -> int:
    with session_scope(engine) as s:
        return s.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.event == action)
        )


@pytest.fixture
def oauth_api(start_api, engine):
    create_user(engine, USER.username, USER.password, USER.role)
    return start_api(**LOCKOUT)


def test_the_password_form_logs_in_and_its_token_works(oauth_api, engine):
    r = _form(oauth_api, **_password_form(client_id="swagger", scope=""))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0, body
    assert r.headers["cache-control"] == "no-store"
    me = oauth_api.http.get("/api/v1/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json()["username"] == USER.username, me.text
    # recorded as the JSON login records itself
    assert _attempts(engine) == [(True, "")]
    assert _audited(engine, "login.ok") == 1
    # and the JSON body is still accepted
    r = oauth_api.http.post(TOKEN, json={"username": USER.username, "password": USER.password})
    assert r.status_code == 200 and r.json()["token_type"] == "bearer", r.text


def test_failed_form_logins_count_toward_the_same_lockout(oauth_api, engine):
    for i in range(LOCKOUT["lockout_threshold"]):
        assert_problem(_form(oauth_api, **_password_form(f"Wrong-{i}")), 401, "Wrong username")
    assert _audited(engine, "login.failed") == LOCKOUT["lockout_threshold"]
    # the throttle the form's failures set refuses the JSON body too, and the right password
    r = oauth_api.http.post(TOKEN, json={"username": USER.username, "password": USER.password})
    assert_problem(r, 429, "from this address")
    assert_problem(_form(oauth_api, **_password_form()), 429, "from this address")
    assert int(r.headers["retry-after"]) >= 1


BAD_FORMS = (
    # (fields or a raw body, status, fragment of the detail, OAuth2 error code)
    (_password_form(grant_type="client_credentials"), 400, "grant_type 'client_credentials'",
     "unsupported_grant_type"),
    (_password_form(scope="admin"), 400, "not by scope", "invalid_scope"),
    ({"username": USER.username, "password": USER.password}, 422, "Invalid grant_type", None),
    ({"grant_type": "password", "username": USER.username}, 422, "Invalid password", None),
    (_password_form(role="admin"), 422, "Invalid role", None),
    (_password_form(username=""), 422, "Invalid username", None),
    ("grant_type=password&grant_type=password&username=u&password=p", 400,
     "'grant_type' is given more than once", "invalid_request"),
    ("grant_type=password&username", 400, "not a valid application/x-www-form-urlencoded",
     "invalid_request"),
    (b"grant_type=password&username=\xff&password=p", 400, "UTF-8", "invalid_request"),
)  # fmt: skip


@sqlite_only
def test_a_bad_form_is_one_sentence_and_no_attempt(oauth_api, engine):
    for form, status, fragment, error in BAD_FORMS:  # one server for all: they change nothing
        if isinstance(form, dict):
            r = _form(oauth_api, **form)
        else:
            r = oauth_api.http.post(
                TOKEN, content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
        body = assert_problem(r, status, fragment)
        assert body["detail"].endswith(".") and body["detail"].count(". ") == 0, body
        assert body.get("error") == error, body
        assert "access_token" not in r.text
    assert _attempts(engine) == []  # every one refused before any password was checked


@sqlite_only
def test_the_openapi_document_declares_the_password_flow(oauth_api):
    document = oauth_api.http.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["OAuth2Password"]["type"] == "oauth2"
    assert schemes["OAuth2Password"]["flows"]["password"]["tokenUrl"] == TOKEN
    # every secured operation takes the flow's token as well as a bearer token
    me = document["paths"]["/api/v1/me"]["get"]
    assert {"OAuth2Password": []} in me["security"] and {"HTTPBearer": []} in me["security"]
    login = document["paths"][TOKEN]["post"]
    assert "security" not in login
    content = login["requestBody"]["content"]
    form = content["application/x-www-form-urlencoded"]["schema"]
    assert set(form["required"]) == {"grant_type", "username", "password"}
    assert form["properties"]["grant_type"]["enum"] == ["password"]
    assert set(content["application/json"]["schema"]["required"]) == {"username", "password"}
    assert "400" in login["responses"] and "401" in login["responses"]
