"""Who may call what, over real HTTP: every route x {anonymous, viewer, analyst, admin}.

The expected outcome of each cell comes from the route's own declaration (the Permission
dependency it carries) and sctk.security.roles.allowed, so the matrix follows the code; the
table of sample requests below must name every route, so that an endpoint added without a
row here fails this module with its name.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import select, update

from sctk.api.app import create_app
from sctk.api.deps import Permission, current_user
from sctk.security import audit_log, tokens, users
from sctk.security.keyring import Keyring
from sctk.security.roles import PERMISSIONS, allowed
from sctk.storage.engine import session_scope
from sctk.storage.models import ApiToken, User, utcnow
from tests.security.conftest import (
    ROLES,
    Account,
    Api,
    assert_problem,
    b64url,
    b64url_json,
    bearer,
    create_token,
    sqlite_only,
    start_viewer_api,
)

EXCLUDED = {
    "/docs",
    "/redoc",
    "/docs-assets/redoc.standalone.js",  # public files of the docs pages
    "/openapi.json",
    "/docs/oauth2-redirect",
}
PUBLIC = "public"
SIGNED_IN = "signed in"  # only CurrentUser: any role will do
EXPECTED_PUBLIC = {
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("POST", "/api/v1/auth/token"),
}
# The user the admin's POST /api/v1/users cell creates; the later admin rows change it
# (disable, unlock, new password), so the table needs no extra account.
TARGET = "made.by.admin"


# --- what the app declares -----------------------------------------------------------------


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    requirement: str  # PUBLIC, SIGNED_IN or a permission name


def _dependencies(dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependencies(sub)


def _route_contexts(app: FastAPI) -> Iterator[tuple[str, set[str], Any]]:
    """(full path, methods, dependant) of every API route, routers included at any depth."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before routers were included lazily: routes are flat
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path, route.methods, route.dependant
        return
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute):
            # the context's dependant carries the dependencies of the routers it was included by
            yield context.path, context.methods, context.dependant


def declared_routes(app: FastAPI) -> list[RouteInfo]:
    found = []
    for path, methods, dependant in _route_contexts(app):
        if path in EXCLUDED:
            continue
        deps = list(_dependencies(dependant))
        perms = {d.call.permission for d in deps if isinstance(d.call, Permission)}
        assert len(perms) <= 1, f"{path} declares several permissions: {perms}"
        if perms:
            requirement = perms.pop()
        elif any(d.call is current_user for d in deps):
            requirement = SIGNED_IN
        else:
            requirement = PUBLIC
        for method in sorted(methods - {"HEAD"}):
            found.append(RouteInfo(method, path, requirement))
    return found


def expected_status(requirement: str, role: str | None) -> str:
    """'2xx', 401 or 403 for ROLE (None: anonymous) on a route with REQUIREMENT."""
    if requirement == PUBLIC:
        return "2xx"
    if role is None:
        return "401"
    if requirement == SIGNED_IN or allowed(role, requirement):
        return "2xx"
    return "403"


# --- the table of sample requests ----------------------------------------------------------


@dataclass
class Ctx:
    api: Api

    def account(self, role: str | None):
        return self.api.accounts[role or "viewer"]

    def job_id(self, cancelled: bool = False, role: str | None = None) -> int:
        """A fresh queued job (cancelled, when a retry should succeed on it), ROLE's own
        when given (a cancel or retry needs the job's ownership; see test_cancel_and_retry_
        per_owner for another's)."""
        from sctk.jobs import queue

        owner = self.account(role).username if role else "matrix"
        with session_scope(self.api.engine) as s:
            job = queue.submit(s, "noop", {}, owner=owner)
            if cancelled:
                queue.cancel(s, job.id, actor="matrix")
            return job.id

    def own_token_id(self, role: str | None) -> int:
        """A fresh token of ROLE's own account, for a revocation that should succeed."""
        _, view = create_token(self.api.engine, self.account(role).username, name="matrix")
        return view.id

    def dataset(self, name: str) -> str:
        """A one-row dataset NAME on the API's data directory (made when missing)."""
        import pandas as pd

        from sctk.pipeline import store

        with session_scope(self.api.engine) as s:
            if store.find(s, name) is None:
                frame = pd.DataFrame({"x": [1.0]})
                out = store.Output(name, frame, "parquet", {"origin": "import", "inputs": []})
                store.store(s, self.api.settings.home, [out], "import", "matrix")
        return name

    def train_dataset(self) -> str:
        """A small dataset with a feature x and a target y, for training requests."""
        import pandas as pd

        from sctk.pipeline import store

        name = "matrix-train"
        with session_scope(self.api.engine) as s:
            if store.find(s, name) is None:
                frame = pd.DataFrame({"x": [float(i) for i in range(20)]})
                frame["y"] = frame["x"] * 2.0
                out = store.Output(name, frame, "parquet", {"origin": "import", "inputs": []})
                store.store(s, self.api.settings.home, [out], "import", "matrix")
        return name

    def backup_id(self) -> str:
        """A snapshot in the backup catalog cache (the API reads the cache, not the repo)."""
        from sctk.storage.models import BackupSnapshot

        sid = "ab" * 32
        with session_scope(self.api.engine) as s:
            if s.get(BackupSnapshot, sid) is None:
                s.add(BackupSnapshot(id=sid, time=utcnow(), label="manual", manifest={}))
        return sid

    def alert_id(self) -> int:
        """A fresh firing alert (stored as the alert engine stores one)."""
        from sctk.monitoring import alerts

        with session_scope(self.api.engine) as s:
            alert = alerts.fire(
                s, rule="matrix", metric="cpu_percent", severity="warning",
                message="matrix alert", now=utcnow(),
            )  # fmt: skip
            return alert.id

    def incident_id(self) -> int:
        """A fresh open incident."""
        from sctk.monitoring import incidents

        with session_scope(self.api.engine) as s:
            return incidents.open_incident(s, "matrix incident", "warning", actor="matrix").id

    def model_id(self, name: str) -> int:
        """A tiny fitted model NAME on feature x, target y (made when missing); its id."""
        import numpy as np

        from sctk.uq import registry
        from sctk.uq.hybrid import HybridRegressor

        with session_scope(self.api.engine) as s:
            found = registry.list_models(s)
            for row in found:
                if row.name == name:
                    return row.id
            X = np.arange(30, dtype=float)[:, None]
            model = HybridRegressor(epochs=1, hidden=(4,)).fit(
                X[:20], X[:20, 0], X_cal=X[20:], y_cal=X[20:, 0]
            )
            lineage = {"features": ["x"], "target": "y"}  # y: what the evaluate row scores
            row = registry.save(s, self.api.settings.home, model, name, lineage=lineage)
            return row.id


@dataclass
class Sample:
    url: str
    json: Any = None


Builder = Callable[[Ctx, "str | None"], Sample]

# Ordered: near the end each role changes its own password (to the same value), which makes
# the login JWTs issued before it stale, and last the admin rotates the keys.
ROWS: dict[tuple[str, str], Builder] = {
    ("GET", "/health/live"): lambda c, r: Sample("/health/live"),
    ("GET", "/health/ready"): lambda c, r: Sample("/health/ready"),
    ("POST", "/api/v1/auth/token"): lambda c, r: Sample(
        "/api/v1/auth/token",
        {"username": c.account(r).username, "password": c.account(r).password},
    ),
    ("GET", "/api/v1/version"): lambda c, r: Sample("/api/v1/version"),
    ("GET", "/api/v1/me"): lambda c, r: Sample("/api/v1/me"),
    ("GET", "/api/v1/users"): lambda c, r: Sample("/api/v1/users"),
    ("POST", "/api/v1/users"): lambda c, r: Sample(
        "/api/v1/users",
        {"username": f"made.by.{r}", "password": "Saffron-Tundra-Beacon-118", "role": "viewer"},
    ),
    ("GET", "/api/v1/users/{username}"): lambda c, r: Sample(f"/api/v1/users/{TARGET}"),
    ("PATCH", "/api/v1/users/{username}"): lambda c, r: Sample(
        f"/api/v1/users/{TARGET}", {"disabled": True}
    ),
    ("POST", "/api/v1/users/{username}/unlock"): lambda c, r: Sample(
        f"/api/v1/users/{TARGET}/unlock"
    ),
    ("PUT", "/api/v1/users/{username}/password"): lambda c, r: Sample(
        f"/api/v1/users/{TARGET}/password", {"password": "Walnut-Comet-Harvest-772"}
    ),
    ("GET", "/api/v1/tokens"): lambda c, r: Sample("/api/v1/tokens"),
    ("POST", "/api/v1/tokens"): lambda c, r: Sample(
        "/api/v1/tokens", {"name": "matrix", "expires": "1d"}
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): lambda c, r: Sample(
        f"/api/v1/tokens/{c.own_token_id(r)}"
    ),
    ("GET", "/api/v1/keys"): lambda c, r: Sample("/api/v1/keys"),
    ("GET", "/api/v1/audit-log"): lambda c, r: Sample("/api/v1/audit-log?limit=5"),
    ("GET", "/api/v1/audit-log/verify"): lambda c, r: Sample("/api/v1/audit-log/verify"),
    ("GET", "/api/v1/jobs"): lambda c, r: Sample("/api/v1/jobs?limit=5"),
    ("POST", "/api/v1/jobs"): lambda c, r: Sample(
        "/api/v1/jobs", {"kind": "noop", "params": {"echo": r}}
    ),
    ("GET", "/api/v1/jobs/kinds"): lambda c, r: Sample("/api/v1/jobs/kinds"),
    ("GET", "/api/v1/jobs/{job_id}"): lambda c, r: Sample(f"/api/v1/jobs/{c.job_id()}"),
    ("GET", "/api/v1/jobs/{job_id}/events"): lambda c, r: Sample(
        f"/api/v1/jobs/{c.job_id()}/events"
    ),
    ("POST", "/api/v1/jobs/{job_id}/cancel"): lambda c, r: Sample(
        f"/api/v1/jobs/{c.job_id(role=r)}/cancel"
    ),
    ("POST", "/api/v1/jobs/{job_id}/retry"): lambda c, r: Sample(
        f"/api/v1/jobs/{c.job_id(cancelled=True, role=r)}/retry"
    ),
    ("GET", "/api/v1/datasets"): lambda c, r: Sample("/api/v1/datasets"),
    # the body of an upload is the file itself: one JSON object is a valid .jsonl file
    ("POST", "/api/v1/datasets"): lambda c, r: Sample(
        f"/api/v1/datasets?filename=matrix.jsonl&name=matrix-{r or 'anonymous'}",
        {"x": 1.5, "y": 2},
    ),
    ("GET", "/api/v1/datasets/{name}"): lambda c, r: Sample(
        f"/api/v1/datasets/{c.dataset('matrix-shown')}"
    ),
    ("GET", "/api/v1/datasets/{name}/lineage"): lambda c, r: Sample(
        f"/api/v1/datasets/{c.dataset('matrix-shown')}/lineage"
    ),
    ("GET", "/api/v1/datasets/{name}/download"): lambda c, r: Sample(
        f"/api/v1/datasets/{c.dataset('matrix-shown')}/download?format=csv"
    ),
    ("POST", "/api/v1/datasets/{name}/verify"): lambda c, r: Sample(
        f"/api/v1/datasets/{c.dataset('matrix-shown')}/verify"
    ),
    ("DELETE", "/api/v1/datasets/{name}"): lambda c, r: Sample(
        f"/api/v1/datasets/{c.dataset(f'matrix-{r or 0}-deleted')}"
    ),
    ("GET", "/api/v1/models"): lambda c, r: Sample("/api/v1/models"),
    ("POST", "/api/v1/models"): lambda c, r: Sample(
        "/api/v1/models",
        {
            "dataset": c.train_dataset(),
            "target": "y",
            "name": f"matrix-{r or 'anonymous'}",
            "config": {"epochs": 1, "hidden": [4]},
            "calibration": 0.5,
        },
    ),
    ("GET", "/api/v1/models/{model_id}"): lambda c, r: Sample(
        f"/api/v1/models/{c.model_id('matrix-shown')}"
    ),
    ("GET", "/api/v1/models/{model_id}/evaluation"): lambda c, r: Sample(
        f"/api/v1/models/{c.model_id('matrix-shown')}/evaluation"
    ),
    ("POST", "/api/v1/models/{model_id}/evaluate"): lambda c, r: Sample(
        f"/api/v1/models/{c.model_id('matrix-shown')}/evaluate", {"dataset": c.train_dataset()}
    ),
    ("POST", "/api/v1/models/{model_id}/predict"): lambda c, r: Sample(
        f"/api/v1/models/{c.model_id('matrix-shown')}/predict", {"rows": [{"x": 1.5}]}
    ),
    ("POST", "/api/v1/models/{model_id}/observations"): lambda c, r: Sample(
        f"/api/v1/models/{c.model_id('matrix-shown')}/observations",
        {"rows": [{"x": 1.5, "y": 2.0}]},
    ),
    ("GET", "/api/v1/models/{model_id}/observations"): lambda c, r: Sample(
        f"/api/v1/models/{c.model_id('matrix-shown')}/observations"
    ),
    ("PUT", "/api/v1/models/{model_id}/adaptive"): lambda c, r: Sample(
        f"/api/v1/models/{c.model_id('matrix-shown')}/adaptive", {"enabled": False}
    ),
    ("DELETE", "/api/v1/models/{model_id}"): lambda c, r: Sample(
        f"/api/v1/models/{c.model_id(f'matrix-{r or 0}-deleted')}"
    ),
    ("GET", "/api/v1/backups"): lambda c, r: Sample("/api/v1/backups"),
    ("POST", "/api/v1/backups"): lambda c, r: Sample("/api/v1/backups", {"label": "manual"}),
    ("GET", "/api/v1/backups/{snapshot_id}"): lambda c, r: Sample(
        f"/api/v1/backups/{c.backup_id()}"
    ),
    ("POST", "/api/v1/backups/{snapshot_id}/verify"): lambda c, r: Sample(
        f"/api/v1/backups/{c.backup_id()[:8]}/verify", {"read_data": False}
    ),
    ("GET", "/metrics"): lambda c, r: Sample("/metrics"),
    ("GET", "/api/v1/metrics/current"): lambda c, r: Sample("/api/v1/metrics/current"),
    ("GET", "/api/v1/metrics/history"): lambda c, r: Sample(
        "/api/v1/metrics/history?metric=cpu_percent&hours=1"
    ),
    ("GET", "/api/v1/metrics/summary"): lambda c, r: Sample("/api/v1/metrics/summary?hours=1"),
    ("GET", "/api/v1/alerts"): lambda c, r: Sample("/api/v1/alerts?all=true"),
    ("GET", "/api/v1/alerts/history"): lambda c, r: Sample("/api/v1/alerts/history?limit=5"),
    ("GET", "/api/v1/alerts/silences"): lambda c, r: Sample("/api/v1/alerts/silences"),
    ("POST", "/api/v1/alerts/silences"): lambda c, r: Sample(
        "/api/v1/alerts/silences", {"target": str(c.alert_id()), "duration": "1h"}
    ),
    ("POST", "/api/v1/alerts/test-notify/{channel}"): lambda c, r: Sample(
        "/api/v1/alerts/test-notify/log"
    ),
    ("GET", "/api/v1/alerts/{alert_id}"): lambda c, r: Sample(f"/api/v1/alerts/{c.alert_id()}"),
    ("GET", "/api/v1/alerts/{alert_id}/events"): lambda c, r: Sample(
        f"/api/v1/alerts/{c.alert_id()}/events"
    ),
    ("POST", "/api/v1/alerts/{alert_id}/ack"): lambda c, r: Sample(
        f"/api/v1/alerts/{c.alert_id()}/ack"
    ),
    ("GET", "/api/v1/incidents"): lambda c, r: Sample("/api/v1/incidents"),
    ("GET", "/api/v1/incidents/{incident_id}"): lambda c, r: Sample(
        f"/api/v1/incidents/{c.incident_id()}"
    ),
    ("POST", "/api/v1/incidents/{incident_id}/notes"): lambda c, r: Sample(
        f"/api/v1/incidents/{c.incident_id()}/notes", {"text": "matrix note"}
    ),
    ("POST", "/api/v1/incidents/{incident_id}/close"): lambda c, r: Sample(
        f"/api/v1/incidents/{c.incident_id()}/close", {"resolution": "matrix resolution"}
    ),
    ("GET", "/api/v1/maintenance/runs"): lambda c, r: Sample("/api/v1/maintenance/runs?limit=5"),
    ("GET", "/api/v1/maintenance/tasks"): lambda c, r: Sample("/api/v1/maintenance/tasks"),
    ("POST", "/api/v1/maintenance/run/{task}"): lambda c, r: Sample("/api/v1/maintenance/run/tmp"),
    ("POST", "/api/v1/me/password"): lambda c, r: Sample(
        "/api/v1/me/password",
        {"current_password": c.account(r).password, "new_password": c.account(r).password},
    ),
    # last: a rotation retires the key that signed every login JWT issued so far
    ("POST", "/api/v1/keys/rotate"): lambda c, r: Sample("/api/v1/keys/rotate"),
}


# cells after which the caller's login JWT no longer works (issued before a password change)
STALES_OWN_JWT = {("POST", "/api/v1/me/password")}


# --- the tests ------------------------------------------------------------------------------


@sqlite_only
def test_every_route_has_a_row_and_a_known_requirement(settings):
    routes = declared_routes(create_app(settings))
    declared = {(r.method, r.path) for r in routes}
    # guards against a route walk that silently finds nothing (and so checks nothing)
    assert ("GET", "/api/v1/version") in declared and len(declared) >= 10, declared
    missing = sorted(f"{m} {p}" for m, p in declared - ROWS.keys())
    assert not missing, (
        f"routes without a row in the permission matrix of {__file__}: {', '.join(missing)}; "
        "add a sample request for each"
    )
    stale = sorted(f"{m} {p}" for m, p in ROWS.keys() - declared)
    assert not stale, f"rows for routes the app no longer has: {', '.join(stale)}"
    public = {(r.method, r.path) for r in routes if r.requirement == PUBLIC}
    assert public == EXPECTED_PUBLIC, f"routes answering without authentication: {public}"
    for r in routes:
        assert r.requirement in (PUBLIC, SIGNED_IN) or r.requirement in PERMISSIONS, r


def test_permission_matrix(api):
    ctx = Ctx(api)
    served = api.server.server.config.app  # the very app under test
    routes = {(r.method, r.path): r for r in declared_routes(served)}
    failures = []
    cells = 0
    for key, build in ROWS.items():
        route = routes[key]
        for role in (None, *ROLES):
            sample = build(ctx, role)
            headers = api.headers(role) if role else {}
            r = api.http.request(route.method, sample.url, json=sample.json, headers=headers)
            want = expected_status(route.requirement, role)
            got = "2xx" if 200 <= r.status_code < 300 else str(r.status_code)
            cells += 1
            if key in STALES_OWN_JWT and role:
                api.forget(role)
            who = role or "anonymous"
            if got != want:
                failures.append(
                    f"{route.method} {sample.url} as {who}: {want} expected, got "
                    f"{r.status_code} {r.text[:200]}"
                )
                continue
            if want == "401":
                assert_problem(r, 401, "Bearer <token>")
                assert r.headers["www-authenticate"] == "Bearer"
            elif want == "403":
                assert_problem(r, 403, f"'{role}'", f"'{route.requirement}'")
    assert not failures, "\n".join(failures)
    assert cells == len(ROWS) * 4

    # the state-changing cells really changed state, once, for the admin only
    assert Keyring.load(api.settings.home).current_id == 2, "the admin's rotation ran"
    with session_scope(api.engine) as s:
        made = set(s.scalars(select(User.username).where(User.username.like("made.by.%"))))
        target = users.get(s, TARGET)
        assert made == {TARGET}
        assert target.disabled is True
        denied = audit_log.entries(s, event="permission.denied")
    # one audited denial per 403 cell
    forbidden = sum(
        expected_status(routes[k].requirement, role) == "403" for k in ROWS for role in ROLES
    )
    assert forbidden >= 10
    assert len(denied) == forbidden
    assert {e.actor for e in denied} == {
        api.accounts["viewer"].username,
        api.accounts["analyst"].username,
    }


# --- cancel and retry per owner ----------------------------------------------------------

OTHER_ANALYST = Account("ola.analyst", "Maple-Gravel-Sonnet-264", "analyst")

# (kind, whose job, who acts) -> may they cancel it, and retry it once cancelled? Decided
# here by hand, not derived from the code under test: noop is a kind an analyst may submit,
# backup.verify needs backups.manage (admins only), whoever submitted it.
PER_OWNER: dict[tuple[str, str, str], bool] = {
    ("noop", "analyst", "analyst"): True,
    ("noop", "analyst", "other analyst"): False,
    ("noop", "analyst", "admin"): True,
    ("noop", "analyst", "viewer"): False,
    ("noop", "admin", "analyst"): False,
    ("noop", "admin", "other analyst"): False,
    ("noop", "admin", "admin"): True,
    ("noop", "admin", "viewer"): False,
    ("backup.verify", "analyst", "analyst"): False,  # their own, but not a kind of theirs
    ("backup.verify", "analyst", "other analyst"): False,
    ("backup.verify", "analyst", "admin"): True,
    ("backup.verify", "analyst", "viewer"): False,
    ("backup.verify", "admin", "analyst"): False,
    ("backup.verify", "admin", "other analyst"): False,
    ("backup.verify", "admin", "admin"): True,
    ("backup.verify", "admin", "viewer"): False,
}


def test_cancel_and_retry_per_owner(api):
    from sctk.jobs import queue
    from tests.security.conftest import create_user

    create_user(api.engine, OTHER_ANALYST.username, OTHER_ANALYST.password, "analyst")
    other = api.login(OTHER_ANALYST.username, OTHER_ANALYST.password)
    who = {
        "analyst": api.accounts["analyst"],
        "admin": api.accounts["admin"],
        "viewer": api.accounts["viewer"],
        "other analyst": OTHER_ANALYST,
    }
    headers = {role: api.headers(role) for role in ROLES} | {"other analyst": bearer(other)}
    params = {"noop": {}, "backup.verify": {"snapshot": "ab" * 32}}

    def job(kind: str, owner: str, cancelled: bool) -> int:
        with session_scope(api.engine) as s:
            made = queue.submit(s, kind, params[kind], owner=who[owner].username)
            if cancelled:
                queue.cancel(s, made.id, actor=who[owner].username)
            return made.id

    def status(job_id: int) -> str:
        with session_scope(api.engine) as s:
            return queue.get(s, job_id).status

    failures, denials = [], 0
    for (kind, owner, actor), may in PER_OWNER.items():
        for action, cancelled, after in (("cancel", False, "cancelled"), ("retry", True, "queued")):
            job_id = job(kind, owner, cancelled)
            before = status(job_id)
            r = api.http.post(f"/api/v1/jobs/{job_id}/{action}", headers=headers[actor])
            cell = f"{actor} {action}s {owner}'s {kind} job"
            if may and (r.status_code != 200 or status(job_id) != after):
                failures.append(f"{cell}: 200 expected, got {r.status_code} {r.text[:200]}")
            elif not may:
                denials += 1
                if r.status_code != 403 or status(job_id) != before:
                    failures.append(f"{cell}: 403 expected, got {r.status_code} {r.text[:200]}")
                else:
                    assert_problem(r, 403, f"'{who[actor].role}'")
    assert not failures, "\n".join(failures)
    with session_scope(api.engine) as s:
        denied = audit_log.entries(s, event="permission.denied")
    assert len(denied) == denials == 22


# --- credentials that must not work --------------------------------------------------------


def _claims(username: str, role: str, iat: float, exp: float) -> dict[str, Any]:
    return {
        "sub": username,
        "role": role,
        "iat": int(iat),
        "exp": int(exp),
        "jti": uuid.uuid4().hex,
    }


def test_forged_expired_and_unknown_jwts_are_refused(viewer_api):
    api = viewer_api
    viewer = api.accounts["viewer"]
    good = api.jwt("viewer")
    assert api.http.get("/api/v1/me", headers=bearer(good)).status_code == 200
    kid, key = Keyring.load(api.settings.home).jwt_key()
    now = time.time()
    header, payload, signature = good.split(".")

    # a character in the middle of the signature: the last one can carry only padding bits
    i = len(signature) // 2
    flipped = signature[:i] + ("A" if signature[i] != "A" else "B") + signature[i + 1 :]
    claims = b64url_json(payload)
    assert claims["role"] == "viewer"
    promoted = b64url(json.dumps({**claims, "role": "admin"}).encode())
    unsigned = jwt.encode(_claims(viewer.username, "viewer", now, now + 600), None, "none")

    cases = {
        "expired": (
            jwt.encode(
                _claims(viewer.username, "viewer", now - 3600, now - 60),
                key,
                algorithm="HS256",
                headers={"kid": str(kid)},
            ),
            "expired",
        ),
        "signature flipped": (f"{header}.{payload}.{flipped}", "not valid"),
        "role changed to admin": (f"{header}.{promoted}.{signature}", "not valid"),
        "unknown kid": (
            jwt.encode(
                _claims(viewer.username, "viewer", now, now + 600),
                key,
                algorithm="HS256",
                headers={"kid": "999"},
            ),
            "not valid",
        ),
        "foreign key": (
            jwt.encode(
                _claims(viewer.username, "viewer", now, now + 600),
                b"k" * 32,
                algorithm="HS256",
                headers={"kid": str(kid)},
            ),
            "not valid",
        ),
        "alg none": (unsigned, "not valid"),
        "unknown user": (
            jwt.encode(
                _claims("nobody.here", "admin", now, now + 600),
                key,
                algorithm="HS256",
                headers={"kid": str(kid)},
            ),
            "no longer exists",
        ),
    }
    for name, (token, fragment) in cases.items():
        r = api.http.get("/api/v1/me", headers=bearer(token))
        assert r.status_code == 401, (name, r.text)
        assert_problem(r, 401, fragment)
        assert r.headers["www-authenticate"] == "Bearer", name

    # a correctly signed token claiming a role its account lacks: the database decides
    claiming_admin = jwt.encode(
        _claims(viewer.username, "admin", now, now + 600),
        key,
        algorithm="HS256",
        headers={"kid": str(kid)},
    )
    r = api.http.get("/api/v1/users", headers=bearer(claiming_admin))
    assert_problem(r, 403, "'viewer'", "'users.manage'")


def test_revoked_expired_and_disabled_credentials_are_refused(start_api, engine):
    # Each refusal below comes once this process's cached verification lapses: a short
    # cache (0.5 s, not the default 2) makes the two waits short. Refusing is what is tested
    # here; how long the cache trusts a credential, tests/security/test_credential_cache.py.
    api = start_viewer_api(start_api, engine, auth_cache_seconds=0.5)
    engine = api.engine
    viewer = api.accounts["viewer"]
    revoked, revoked_view = create_token(engine, viewer.username, name="to revoke")
    expired, expired_view = create_token(engine, viewer.username, name="to expire")
    kept, _ = create_token(engine, viewer.username, name="kept")
    login_jwt = api.jwt("viewer")
    for token in (revoked, expired, kept, login_jwt):
        assert api.http.get("/api/v1/me", headers=bearer(token)).status_code == 200

    with session_scope(engine) as s:
        tokens.revoke(s, revoked_view.id, actor="tests")
        s.execute(
            update(ApiToken)
            .where(ApiToken.id == expired_view.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    for token, fragment in (
        (revoked, "revoked"),
        (expired, "expired"),
        (kept[:-4] + ("AAAA" if not kept.endswith("AAAA") else "BBBB"), "not valid"),
        ("sctk_short", "malformed"),
    ):
        api.refused_soon("/api/v1/me", token, fragment)
    assert api.http.get("/api/v1/me", headers=bearer(kept)).status_code == 200

    # disabling the account stops its login JWT and its API token at once
    with session_scope(engine) as s:
        users.set_disabled(s, viewer.username, True, actor="tests")
    for token in (kept, login_jwt):
        api.refused_soon("/api/v1/me", token, "disabled")
    r = api.http.post(
        "/api/v1/auth/token", json={"username": viewer.username, "password": viewer.password}
    )
    assert_problem(r, 401, "disabled")


@sqlite_only
def test_malformed_authorization_headers(live_app):
    with live_app.client() as c:
        for header in ("Basic xyz", "Bearer", "Bearer a b", "", "Token abc"):
            r = c.get("/api/v1/me", headers={"Authorization": header})
            assert_problem(r, 401, "Bearer <token>")
            assert r.headers["www-authenticate"] == "Bearer", header


def test_viewer_forging_an_admin_request_is_denied_and_audited(viewer_api):
    api = viewer_api
    viewer = api.accounts["viewer"].username
    with session_scope(api.engine) as s:
        before = users.count(s)
    r = api.http.post(
        "/api/v1/users",
        json={"username": "sneaky.admin", "password": "Garnet-Prairie-Falcon-239", "role": "admin"},
        headers=api.headers("viewer"),
    )
    assert_problem(r, 403, "'viewer'", "'users.manage'")
    with session_scope(api.engine) as s:
        assert users.count(s) == before
        assert s.scalar(select(User).where(User.username == "sneaky.admin")) is None
        denied = audit_log.entries(s, event="permission.denied")
        assert audit_log.verify(s).ok
    assert len(denied) == 1
    entry = denied[0]
    assert entry.actor == viewer
    assert entry.outcome == "denied"
    assert entry.client == "127.0.0.1"
    assert entry.details == {
        "permission": "users.manage",
        "method": "POST",
        "path": "/api/v1/users",
    }
