"""The monitoring health checks on real rows, real log files and real sockets."""

from __future__ import annotations

import json
import logging
import socket
from datetime import UTC, datetime, timedelta

import psutil
import pytest
from sqlalchemy import update

from sctk import config, logs
from sctk.health import Status, run_checks
from sctk.health.registry import registered
from sctk.jobs import queue
from sctk.monitoring import checks
from sctk.monitoring.checks import configured_endpoints, log_errors_since, parse_endpoint
from sctk.runtime import Runtime
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import Job
from tests.helpers import free_port
from tests.security.conftest import sqlite_only

MONITORING_CHECKS = ["memory", "cpu_load", "workers", "scheduler", "log_errors", "connectivity"]


@pytest.fixture
def engine(settings):
    eng = make_engine(settings)
    yield eng
    eng.dispose()


def outcome(settings, name: str):
    alone = name in ("memory", "cpu_load", "log_errors")
    report = run_checks(Runtime(settings), [name] if alone else ["database", name])
    return next(o for o in report.outcomes if o.name == name)


def test_the_checks_are_registered():
    checks = registered()
    assert set(MONITORING_CHECKS) <= set(checks)
    assert checks["workers"].depends_on == ("database", "migrations")
    # importing this module first (as this test file did) keeps the registry's order
    order = list(checks)
    assert order.index("database") < order.index("keyring") < order.index("memory")


@sqlite_only
def test_memory_against_thresholds(settings, backend):
    used = psutil.virtual_memory().percent
    calm = config.load(
        settings.home,
        {"monitor": {"memory_warning_percent": 99.5, "memory_critical_percent": 99.9}},
    ).settings
    if used < 99.0:
        assert outcome(calm, "memory").status is Status.OK
    low = max(used / 4, 0.1)
    warn = config.load(
        settings.home,
        {"monitor": {"memory_warning_percent": low, "memory_critical_percent": 99.99}},
    ).settings
    o = outcome(warn, "memory")
    assert o.status is Status.WARNING
    assert o.values["warning_above_percent"] == low
    assert f"{o.values['used_percent']:.1f}% used" in o.message
    crit = config.load(
        settings.home,
        {"monitor": {"memory_warning_percent": low / 2, "memory_critical_percent": low}},
    ).settings
    assert outcome(crit, "memory").status is Status.CRITICAL


@sqlite_only
def test_cpu_load_against_thresholds(settings, backend):
    calm = config.load(settings.home, {"monitor": {"load_warning_per_core": 999}}).settings
    o = outcome(calm, "cpu_load")
    assert o.status is Status.OK
    assert o.values["cores"] == psutil.cpu_count()
    # any machine running this test has some load; a threshold below it warns
    tight = config.load(settings.home, {"monitor": {"load_warning_per_core": 0.0001}}).settings
    if o.values["load1"] > 0.0001 * o.values["cores"]:
        busy = outcome(tight, "cpu_load")
        assert busy.status is Status.WARNING and "above 0.0001" in busy.message


def test_stale_worker_heartbeat_is_detected(settings, engine):
    assert outcome(settings, "workers").status is Status.OK
    with session_scope(engine) as s:
        job = queue.submit(s, "noop", {}, owner="test")
        job_id = job.id
    # a worker claimed the job and then went silent an hour ago
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with session_scope(engine) as s:
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                status="running",
                worker="host-1:4242",
                heartbeat_at=hour_ago,
                started_at=hour_ago,
                attempts=1,
            )  # fmt: skip
        )
    o = outcome(settings, "workers")
    assert o.status is Status.WARNING
    assert f"job {job_id} on host-1:4242" in o.message
    assert o.values["stale"] == 1 and o.values["stale_jobs"][0]["id"] == job_id

    # a heartbeat now makes it fresh again
    with session_scope(engine) as s:
        s.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=datetime.now(UTC)))
    assert outcome(settings, "workers").status is Status.OK


def test_queued_jobs_nobody_runs_are_reported(settings, engine):
    with session_scope(engine) as s:
        job = queue.submit(s, "noop", {}, owner="test")
        s.flush()
        job.run_after = datetime.now(UTC) - timedelta(minutes=10)
    o = outcome(settings, "workers")
    assert o.status is Status.WARNING
    assert "none running" in o.message and o.values["queued_overdue"] == 1


@sqlite_only
def test_scheduler_without_and_with_a_lease(settings, engine, backend):
    from sctk.storage import lease
    from sctk.storage.engine import session_scope
    from sctk.storage.models import Lease

    o = outcome(settings, "scheduler")
    assert (o.status, o.message) == (Status.OK, "no scheduler has run on this database yet")
    with session_scope(engine) as s:
        assert lease.acquire(s, "scheduler", "host-a", ttl_seconds=300)
    o = outcome(settings, "scheduler")
    assert o.status is Status.OK and "host-a" in o.message
    with engine.begin() as conn:  # the holder stopped renewing five minutes ago
        conn.execute(
            Lease.__table__.update().values(expires_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    o = outcome(settings, "scheduler")
    assert o.status is Status.WARNING and "expired" in o.message and "host-a" in o.message


@sqlite_only
def test_errors_are_counted_from_the_real_log_file(settings, backend):
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        path = logs.configure(settings, console=False)
        log = logging.getLogger("sctk.test")
        log.info("all fine")
        log.error("disk on fire")
        log.warning("just a warning")
        log.error("database went away")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("handler crashed")
    finally:
        for h in root.handlers:
            if h not in saved[0]:
                h.close()
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    # an error of two days ago, in a rotated file
    old = {"time": (datetime.now(UTC) - timedelta(days=2)).isoformat(), "level": "ERROR",
           "logger": "sctk.old", "message": "ancient history"}  # fmt: skip
    (path.parent / "sctk.log.1").write_text(json.dumps(old) + "\n")

    o = outcome(settings, "log_errors")
    assert o.status is Status.WARNING
    assert o.values["errors_24h"] == 3
    assert [e["message"] for e in o.values["newest"]] == [
        "handler crashed",
        "database went away",
        "disk on fire",
    ]
    assert "3 error(s)" in o.message and "handler crashed" in o.message

    count, _ = log_errors_since(path.parent, datetime.now(UTC) - timedelta(days=3))
    assert count == 4

    # a new error is seen at once (the scan is cached only while the files are unchanged)
    new = {"time": datetime.now(UTC).isoformat(), "level": "CRITICAL", "logger": "sctk.x",
           "message": "out of memory"}  # fmt: skip
    with path.open("a") as fh:
        fh.write(json.dumps(new) + "\n")
    again = outcome(settings, "log_errors")
    assert again.values["errors_24h"] == 4
    assert again.values["newest"][0]["message"] == "out of memory"


@sqlite_only
def test_log_errors_are_read_incrementally_across_rotation(settings, backend, monkeypatch):
    log_dir = settings.home / "logs"
    path = log_dir / "sctk.log"

    def line(message: str, level: str = "ERROR", age: timedelta = timedelta(0)) -> str:
        at = (datetime.now(UTC) - age).isoformat()
        return json.dumps({"time": at, "level": level, "logger": "t", "message": message}) + "\n"

    path.write_text(line("one") + line("fine", "INFO") + line("stale", age=timedelta(hours=30)))
    assert outcome(settings, "log_errors").values["errors_24h"] == 1
    reads: list[int] = []
    original = checks._FileErrors.read_from
    monkeypatch.setattr(
        checks._FileErrors,
        "read_from",
        lambda self, p: (reads.append(self.offset), original(self, p))[1],
    )
    with path.open("a") as fh:  # half a line: not counted until it is whole
        fh.write(line("two") + line("three")[:20])
    assert outcome(settings, "log_errors").values["errors_24h"] == 2
    assert reads[-1] > 0, "only what was appended is read"
    with path.open("a") as fh:
        fh.write(line("three")[20:])
    assert outcome(settings, "log_errors").values["errors_24h"] == 3
    path.rename(log_dir / "sctk.log.1")  # rotation: the same file under another name
    path.write_text(line("four", "CRITICAL"))
    reads.clear()
    o = outcome(settings, "log_errors")
    assert o.values["errors_24h"] == 4
    assert [e["message"] for e in o.values["newest"]][:2] == ["four", "three"]
    assert reads == [0], "the rotated file is not read again; the new one from its start"
    (log_dir / "sctk.log.1").unlink()
    assert outcome(settings, "log_errors").values["errors_24h"] == 1


@sqlite_only
def test_no_log_errors_is_ok(settings, backend):
    o = outcome(settings, "log_errors")
    assert (o.status, o.values["errors_24h"]) == (Status.OK, 0)


def test_connectivity_reports_latency_and_unreachable_endpoints(settings):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    alive = listener.getsockname()[1]
    dead = free_port()
    try:
        ok = outcome(settings, "connectivity")
        assert ok.status is Status.OK
        assert ok.values["endpoints"][0]["name"] == "database"
        assert ok.values["endpoints"][0]["latency_ms"] >= 0

        s = config.load(
            settings.home,
            {
                "monitor": {
                    "endpoints": [f"127.0.0.1:{alive}", f"http://127.0.0.1:{dead}/hook"],
                    "connect_timeout_seconds": 2,
                },
                "backup": {"repository": str(settings.home / "backups")},  # local: not probed
            },
        ).settings
        o = outcome(s, "connectivity")
    finally:
        listener.close()
    assert o.status is Status.WARNING
    by_target = {e.get("target", e["name"]): e for e in o.values["endpoints"]}
    assert by_target[f"127.0.0.1:{alive}"]["ok"] is True
    assert by_target[f"127.0.0.1:{alive}"]["latency_ms"] >= 0
    assert by_target[f"127.0.0.1:{dead}"]["ok"] is False
    assert "1 of 3 endpoint(s) unreachable" in o.message
    assert f"monitor.endpoints[1] (127.0.0.1:{dead})" in o.message


@sqlite_only
def test_notification_hosts_are_found(settings, backend):
    # a remote backup repository is asked through its storage driver instead (an S3 URL names
    # a bucket, not a host): tests/backup/test_backup_remote_*.py
    s = config.load(
        settings.home, {"backup": {"repository": "sftp://backup@vault.example.org/srv/sctk"}}
    ).settings
    assert not [e for e in configured_endpoints(s) if e.name == "backup repository"]
    s = config.load(
        settings.home, {"alerts": {"smtp": {"host": "mail.example.org", "port": 587}}}
    ).settings
    found = {(e.name, e.host, e.port) for e in configured_endpoints(s)}
    assert ("alerts.smtp.host", "mail.example.org", 587) in found
    assert parse_endpoint("x", "/var/backups") is None
    assert parse_endpoint("x", "file:///var/backups") is None
    assert parse_endpoint("x", "smtp.example.org", 587).port == 587
    assert parse_endpoint("x", "https://hooks.example.org/T1").port == 443
