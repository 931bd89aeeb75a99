"""/api/v1/backups over real HTTP: the cached catalog and runs, one snapshot, 404s as
problems, and backups taken and verified as jobs by the app's own worker."""

from __future__ import annotations

from sctk import config
from sctk.api.app import create_app
from sctk.backup.location import init_repo
from sctk.storage.engine import make_engine
from tests.backup.backup_support import populate, set_passphrase
from tests.helpers import LiveServer, wait_until
from tests.security.conftest import ACCOUNTS, assert_problem, bearer, create_user


def _job(client, headers, job_id: int) -> dict:
    r = client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _finished(client, headers, job_id: int) -> dict:
    return wait_until(
        lambda: (
            (j := _job(client, headers, job_id))["status"] in ("succeeded", "failed", "dead") and j
        ),
        timeout=120,
        what=f"job {job_id} to finish",
    )


def test_catalog_and_jobs_over_http(settings, backend, monkeypatch):
    set_passphrase(monkeypatch)  # the worker's processes inherit it, as a service's would
    populate(settings, model=False)
    init_repo(settings)
    engine = make_engine(settings)
    admin = ACCOUNTS["admin"]
    viewer = ACCOUNTS["viewer"]
    create_user(engine, admin.username, admin.password, "admin")
    create_user(engine, viewer.username, viewer.password, "viewer")
    engine.dispose()
    fast = config.load(
        settings.home,
        {"jobs": {"poll_seconds": 0.05, "heartbeat_seconds": 0.2}, "executor": {"processes": 1}},
    ).settings
    with LiveServer(create_app(fast, workers=1)) as server, server.client() as http:
        token = http.post(
            "/api/v1/auth/token", json={"username": admin.username, "password": admin.password}
        ).json()["access_token"]
        h = bearer(token)

        empty = http.get("/api/v1/backups", headers=h)
        assert empty.status_code == 200, empty.text
        assert empty.json() == {"snapshots": [], "runs": [], "configured": True, "problem": None}

        accepted = http.post("/api/v1/backups", json={"label": "weekly"}, headers=h)
        assert accepted.status_code == 202, accepted.text
        assert accepted.json()["kind"] == "backup.create"
        job = _finished(http, h, accepted.json()["job"])
        assert job["status"] == "succeeded", job
        snap_id = job["result"]["snapshot"]["id"]

        listed = http.get("/api/v1/backups", headers=h).json()
        assert [s["id"] for s in listed["snapshots"]] == [snap_id]
        assert listed["snapshots"][0]["label"] == "weekly"
        assert listed["snapshots"][0]["kind"] == "regular"
        assert listed["snapshots"][0]["status"] == "unverified"
        assert listed["snapshots"][0]["manifest"]["tables"]["datasets"] == 1
        [run] = listed["runs"]
        assert (run["kind"], run["status"], run["snapshot_id"]) == ("create", "succeeded", snap_id)
        assert run["actor"] == f"job:{admin.username}" and run["seconds"] > 0

        one = http.get(f"/api/v1/backups/{snap_id[:10]}", headers=h)
        assert one.status_code == 200 and one.json()["id"] == snap_id
        assert http.get("/api/v1/backups/latest", headers=h).json()["id"] == snap_id

        assert_problem(http.get("/api/v1/backups/0123abcd", headers=h), 404, "0123abcd")
        assert_problem(http.post("/api/v1/backups/0123abcd/verify", headers=h), 404, "0123abcd")
        bad = http.get("/api/v1/backups/not-an-id!", headers=h)
        assert bad.status_code == 422 and "problem+json" in bad.headers["content-type"]
        refused = http.post("/api/v1/backups", json={"label": "hourly"}, headers=h)
        assert refused.status_code == 422, refused.text

        checked = http.post(
            f"/api/v1/backups/{snap_id}/verify", json={"read_data": True}, headers=h
        )
        assert checked.status_code == 202, checked.text
        job = _finished(http, h, checked.json()["job"])
        assert job["status"] == "succeeded", job
        assert job["result"]["ok"] and job["result"]["check"]["read_data"]
        after = http.get(f"/api/v1/backups/{snap_id}", headers=h).json()
        assert after["verified_at"] is not None and after["status"] == "verified"

        # a safety snapshot is listed with its kind; 'latest' passes it over unless asked
        safety = http.post("/api/v1/backups", json={"label": "pre-update"}, headers=h)
        safety_id = _finished(http, h, safety.json()["job"])["result"]["snapshot"]["id"]
        assert http.get("/api/v1/backups/latest", headers=h).json()["id"] == snap_id
        chosen = http.get("/api/v1/backups/latest?include_safety=true", headers=h).json()
        assert chosen["id"] == safety_id and chosen["kind"] == "safety"
        kinds = [
            (r["kind"], r["status"]) for r in http.get("/api/v1/backups", headers=h).json()["runs"]
        ]
        assert kinds == [("create", "succeeded"), ("verify", "succeeded"), ("create", "succeeded")]

        # a viewer may not see or take backups
        vtoken = http.post(
            "/api/v1/auth/token", json={"username": viewer.username, "password": viewer.password}
        ).json()["access_token"]
        assert_problem(http.get("/api/v1/backups", headers=bearer(vtoken)), 403, "backups.manage")
        assert_problem(http.post("/api/v1/backups", headers=bearer(vtoken)), 403)
