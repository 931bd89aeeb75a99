"""The cache of verified credentials: bounded in time, cleared by changes made through the API."""

from __future__ import annotations

from datetime import timedelta

from sctk.security import tokens
from sctk.security.credentials import CredentialCache, Principal
from sctk.storage.engine import session_scope
from sctk.storage.models import utcnow
from tests.security.conftest import assert_problem, bearer, create_token, sqlite_only


def _revoke_out_of_band(engine, token_id: int) -> None:
    """As the CLI or another API process would: straight in the database."""
    with session_scope(engine) as s:
        tokens.revoke(s, token_id, actor="tests")


@sqlite_only
def test_without_the_cache_a_revocation_elsewhere_is_refused_at_once(start_api, accounts):
    api = start_api(accounts, auth_cache_seconds=0)
    token, view = create_token(api.engine, accounts["viewer"].username, name="t")
    assert api.http.get("/api/v1/me", headers=bearer(token)).status_code == 200
    _revoke_out_of_band(api.engine, view.id)
    assert_problem(api.http.get("/api/v1/me", headers=bearer(token)), 401, "revoked")


@sqlite_only
def test_cached_credentials_are_reverified_after_a_change_through_the_api(start_api, accounts):
    # a long window, so that only the clearing can explain the prompt refusal below
    api = start_api(accounts, auth_cache_seconds=60)
    viewer = accounts["viewer"].username
    first, first_view = create_token(api.engine, viewer, name="first")
    second, second_view = create_token(api.engine, viewer, name="second")
    for token in (first, second):
        assert api.http.get("/api/v1/me", headers=bearer(token)).status_code == 200

    # revoked elsewhere: this process still trusts its verification from moments ago ...
    _revoke_out_of_band(api.engine, first_view.id)
    assert api.http.get("/api/v1/me", headers=bearer(first)).status_code == 200
    # ... until a change of credentials through this API clears what it had verified
    r = api.http.delete(f"/api/v1/tokens/{second_view.id}", headers=api.headers("admin"))
    assert r.status_code == 200, r.text
    assert_problem(api.http.get("/api/v1/me", headers=bearer(first)), 401, "revoked")
    assert_problem(api.http.get("/api/v1/me", headers=bearer(second)), 401, "revoked")


def test_a_cached_verification_never_outlives_the_credential():
    cache = CredentialCache(ttl_seconds=60)
    who = Principal(1, "ada", "viewer", "jwt")
    cache.put("long", who, utcnow() + timedelta(hours=1))
    cache.put("expired", who, utcnow() - timedelta(seconds=1))
    assert cache.get("long") == who
    assert cache.get("expired") is None
    cache.clear()
    assert cache.get("long") is None


def test_a_zero_lifetime_disables_the_cache():
    cache = CredentialCache(ttl_seconds=0)
    cache.put("x", Principal(1, "ada", "viewer", "token"), None)
    assert cache.get("x") is None
