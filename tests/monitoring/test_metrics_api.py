"""/metrics and /api/v1/metrics/* over real HTTP, on a live app whose collector runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import inspect

from sctk import config
from sctk.api.app import create_app
from sctk.jobs import queue
from sctk.monitoring import store
from sctk.monitoring.sampler import metric_names
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import MaintenanceRun
from tests.helpers import LiveServer, wait_until
from tests.security.conftest import assert_problem, bearer

FAST = {"monitor": {"interval_seconds": 0.2}}


@pytest.fixture
def engine(settings):
    eng = make_engine(settings)
    yield eng
    eng.dispose()


@pytest.fixture
def token(engine) -> str:
    """A personal API token of a read-only account: what a Prometheus scraper would use."""
    from sctk.security import tokens, users

    with session_scope(engine) as session:
        user = users.create(session, "prom", "Quiet-Lantern-Orbit-47", "viewer", actor="test")
        plaintext, _ = tokens.create(session, user, "scraper", None, actor="test")
    return plaintext


@pytest.fixture
def server(settings) -> Iterator[LiveServer]:
    app = create_app(config.load(settings.home, FAST).settings, collect=True)
    with LiveServer(app) as live:
        wait_until(lambda: app.state.collector.samples >= 2, what="the collector's samples")
        yield live


@pytest.fixture
def http(server, token) -> Iterator[httpx.Client]:
    with server.client(headers=bearer(token)) as client:
        yield client


def scrape(http: httpx.Client) -> dict[tuple[str, tuple], float]:
    r = http.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def requests_counted(samples, route: str, status: str) -> float:
    key = ("sctk_http_requests_total", (("method", "GET"), ("route", route), ("status", status)))
    return samples.get(key, 0.0)


def test_metrics_needs_a_credential(server):
    with server.client() as anonymous:
        r = anonymous.get("/metrics")
    assert_problem(r, 401, "Bearer <token>")


def test_prometheus_exposition_counts_requests(http, engine, settings):
    before = scrape(http)
    route = "/api/v1/jobs/{job_id}"
    for _ in range(3):
        assert http.get("/api/v1/version").status_code == 200
    assert http.get("/api/v1/jobs/999999").status_code == 404
    after = scrape(http)
    assert requests_counted(after, "/api/v1/version", "200") == (
        requests_counted(before, "/api/v1/version", "200") + 3
    )
    # the route template, not the path: one series for every job id
    assert requests_counted(after, route, "404") == requests_counted(before, route, "404") + 1
    assert not any("999999" in dict(labels).get("route", "") for _, labels in after)
    latency = (
        "sctk_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/api/v1/version")),
    )
    assert after[latency] >= 3

    # system metrics from the running collector
    assert 0 <= after[("sctk_host_cpu_percent", ())] <= 100
    assert after[("sctk_process_resident_memory_bytes", ())] > 0
    assert ("sctk_host_disk_percent", (("path", "default"),)) in after
    assert after[("sctk_database_up", ())] == 1.0


def test_scrape_time_metrics_follow_the_database(http, engine):
    with session_scope(engine) as s:
        queue.submit(s, "noop", {}, owner="test")
        queue.submit(s, "noop", {}, owner="test")
        now = datetime.now(UTC)
        s.add(MaintenanceRun(task="vacuum", status="ok", started_at=now, finished_at=now))
        s.add(MaintenanceRun(task="vacuum", status="fail", started_at=now, finished_at=now))
        s.add(MaintenanceRun(task="rotate-logs", status="warn", started_at=now, finished_at=now))
    samples = scrape(http)
    assert samples[("sctk_jobs", (("state", "queued"),))] == 2
    assert samples[("sctk_jobs", (("state", "running"),))] == 0
    assert samples[("sctk_jobs_queue_depth", ())] == 2
    assert samples[("sctk_maintenance_last_status", (("task", "vacuum"),))] == 2  # the newest
    assert samples[("sctk_maintenance_last_status", (("task", "rotate-logs"),))] == 1
    assert samples[("sctk_maintenance_runs_total", (("status", "ok"), ("task", "vacuum")))] == 1
    assert samples[("sctk_uq_cache_hits_total", ())] >= 0

    # the backup catalog belongs to the backup domain; its age is exported where it exists
    if inspect(engine).has_table("backup_snapshots"):
        from sctk.storage.models import BackupSnapshot

        with session_scope(engine) as s:
            s.add(
                BackupSnapshot(
                    id="cd" * 32,
                    time=datetime.now(UTC) - timedelta(hours=2),
                    label="manual",
                    manifest={},
                )
            )
        age = scrape(http)[("sctk_backup_last_age_seconds", ())]
        assert 2 * 3600 - 5 < age < 2 * 3600 + 600


def test_current_history_and_summary(http, engine, settings):
    current = http.get("/api/v1/metrics/current")
    assert current.status_code == 200, current.text
    body = current.json()
    assert body["source"] == "collector"
    assert set(body["metrics"]) == set(metric_names([settings.home]))

    recent = http.get("/api/v1/metrics/history", params={"metric": "cpu_percent", "hours": 0.5})
    assert recent.status_code == 200, recent.text
    data = recent.json()
    assert data["source"] == "window" and data["metric"] == "cpu_percent"
    assert len(data["points"]) >= 2
    assert all(p["count"] == 1 and p["min"] == p["avg"] == p["max"] for p in data["points"])

    # longer than the window: the stored minutes
    minute = store.bucket_of(datetime.now(UTC) - timedelta(hours=5), 7200) + timedelta(minutes=10)
    store.save(
        engine,
        [
            store.Aggregate("cpu_percent", minute, 10.0, 5.0, 20.0, 60),
            store.Aggregate("cpu_percent", minute + timedelta(minutes=1), 40.0, 30.0, 90.0, 20),
        ],
    )
    longer = http.get("/api/v1/metrics/history", params={"metric": "cpu_percent", "hours": 8})
    data = longer.json()
    assert data["source"] == "aggregates"
    assert [p["avg"] for p in data["points"][:2]] == [10.0, 40.0]
    assert data["points"][0]["time"] == minute.isoformat()
    assert data["step_seconds"] == 60

    # the retention's span is answered in coarser steps, merged by sample count
    everything = http.get(
        "/api/v1/metrics/history", params={"metric": "cpu_percent", "hours": 2160}
    ).json()
    assert everything["step_seconds"] == 7200 and len(everything["points"]) <= 2000
    merged = everything["points"][0]
    assert merged["time"] == (minute - timedelta(minutes=10)).isoformat()
    assert (merged["min"], merged["max"], merged["count"]) == (5.0, 90.0, 80)
    assert merged["avg"] == pytest.approx((10.0 * 60 + 40.0 * 20) / 80)

    summary = http.get("/api/v1/metrics/summary", params={"hours": 8}).json()
    assert summary["source"] == "aggregates"
    cpu = summary["metrics"]["cpu_percent"]
    # the window's samples may have been stored too (a minute ended): compare what we put in
    assert cpu["maximum"] >= 90.0 and cpu["minimum"] <= 5.0
    assert cpu["points"] >= 80

    recent_summary = http.get("/api/v1/metrics/summary", params={"hours": 1}).json()
    assert recent_summary["source"] == "window"
    mem = recent_summary["metrics"]["memory_percent"]
    assert mem["minimum"] <= mem["average"] <= mem["maximum"]
    assert mem["points"] >= 2 and set(mem) == {"current", "average", "maximum", "minimum", "points"}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_bad_input_is_a_problem(http, backend):
    unknown = http.get("/api/v1/metrics/history", params={"metric": "cpu_precent", "hours": 1})
    body = assert_problem(unknown, 400, "Unknown metric 'cpu_precent'", "cpu_percent")
    assert body["detail"].endswith(".")
    for hours in ("0", "-1", "100000", "nan", "inf"):
        r = http.get("/api/v1/metrics/history", params={"metric": "cpu_percent", "hours": hours})
        assert_problem(r, 400, "hours must be more than 0 and at most 2160")
        r = http.get("/api/v1/metrics/summary", params={"hours": hours})
        assert_problem(r, 400, "hours must be more than 0")
    missing = http.get("/api/v1/metrics/history", params={"hours": 1})
    assert_problem(missing, 422, "metric")
    words = http.get("/api/v1/metrics/summary", params={"hours": "a day"})
    assert_problem(words, 422, "hours")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_only_the_served_app_collects(settings, token, engine, backend):
    plain = create_app(settings)
    with LiveServer(plain) as live, live.client(headers=bearer(token)) as client:
        assert plain.state.collector is None
        body = client.get("/api/v1/metrics/current").json()
        assert body["source"] == "sample"  # sampled for the request, nothing running
        assert "cpu_percent" in body["metrics"]

    served = create_app(config.load(settings.home, FAST).settings, workers=None)
    with LiveServer(served):
        collector = served.state.collector
        assert collector is not None and collector.is_running
        wait_until(lambda: collector.samples >= 2, what="the served app's collector")
    assert not collector.is_running
    # stopping stored the minute in progress
    with session_scope(engine) as s:
        assert store.has_metric(s, "cpu_percent")
