"""Over HTTP, without a browser: the dashboard's pages and static files (public shells, a
strict Content-Security-Policy, nothing fetched from elsewhere) and the maintenance API they
use (runs, tasks, running one task; an unknown task is a problem naming the known ones)."""

from __future__ import annotations

import re
from pathlib import Path

from sctk.web import routes as web
from tests.security.conftest import assert_problem, sqlite_only

STATIC = Path(web.__file__).parent / "static"


@sqlite_only
def test_pages_are_public_shells_with_a_strict_policy(live_app):
    with live_app.client() as http:
        for path, (module, title) in web.PAGES.items():
            r = http.get(path)
            assert r.status_code == 200, (path, r.status_code)
            assert r.headers["content-type"].startswith("text/html")
            assert f'data-page="{module}"' in r.text and title in r.text
            csp = r.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'self'" in csp
            assert "<script>" not in r.text  # no inline script: the policy would refuse it
        for f in sorted(STATIC.rglob("*.*")):
            url = f"{web.STATIC_URL}/{f.relative_to(STATIC).as_posix()}"
            r = http.get(url)
            assert r.status_code == 200, url
        assert http.get(f"{web.STATIC_URL}/js/pages/missing.js").status_code == 404
        # the data itself stays behind the API's authentication
        assert_problem(http.get("/api/v1/maintenance/runs"), 401, "Authentication required")


def test_static_files_reach_no_other_site():
    # the one absolute URL allowed is the SVG namespace, an identifier that is never fetched
    allowed = {"http://www.w3.org/2000/svg"}
    for f in STATIC.rglob("*.*"):
        text = f.read_text(encoding="utf-8")
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", text))
        assert urls <= allowed, (f.name, urls - allowed)
        assert "import(" not in text or f.name == "main.js", f.name


def test_maintenance_api_runs_a_task_and_lists_it(api):
    admin = api.headers("admin")
    viewer = api.headers("viewer")
    tasks = api.http.get("/api/v1/maintenance/tasks", headers=viewer)
    assert tasks.status_code == 200
    names = {t["name"]: t["group"] for t in tasks.json()}
    assert names["tmp"] == "daily" and names["compliance_audit"] == "monthly"
    assert api.http.get("/api/v1/maintenance/runs", headers=viewer).json() == []

    ran = api.http.post("/api/v1/maintenance/run/tmp", headers=admin)
    assert ran.status_code == 200, ran.text
    run = ran.json()
    assert (run["task"], run["trigger"]) == ("tmp", "api")
    assert run["status"] in ("ok", "warn") and run["finished_at"] and run["summary"]

    unknown = api.http.post("/api/v1/maintenance/run/no-such-task", headers=admin)
    assert_problem(unknown, 400, "Unknown maintenance task 'no-such-task'", "tmp")

    runs = api.http.get("/api/v1/maintenance/runs?task=tmp", headers=viewer).json()
    assert [r["id"] for r in runs] == [run["id"]]  # the refused one recorded nothing
    assert api.http.get("/api/v1/maintenance/runs?task=health", headers=viewer).json() == []
    bad = api.http.get("/api/v1/maintenance/runs?limit=0", headers=viewer)
    assert_problem(bad, 422, "Invalid limit")
