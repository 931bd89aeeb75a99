"""`sctk emergency` against a real worker process, a real webhook and a real backup."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from sctk import config
from sctk.backup.create import create_backup
from sctk.backup.location import init_repo, open_repo
from sctk.jobs import queue, switches
from sctk.monitoring import incidents, notifiers
from sctk.ops.emergency import job_pool_processes, run_emergency
from sctk.runtime import Runtime
from sctk.security.keyring import Keyring
from sctk.storage.engine import session_scope
from tests.backup.backup_support import ENV, populate
from tests.helpers import run_sctk, wait_until
from tests.monitoring.test_notifiers import Webhook
from tests.security.conftest import sqlite_only


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def with_webhook(settings, engine, url: str):
    s = config.load(settings.home, {"alerts": {"channels": ["log", "webhook"]}}).settings
    with session_scope(engine) as session:
        notifiers.set_webhook(session, Keyring.load(settings.home), url, actor="test")
    return s


# run_emergency ends the job processes of every sctk process on the machine: on its own,
# so that no other test's worker loses its job process meanwhile
@pytest.mark.exclusive
@sqlite_only
def test_the_response_restarts_a_live_worker_and_records_every_step(settings, engine, webhook):
    s = with_webhook(settings, engine, webhook.url)
    (settings.home / "tmp" / "upload.part").write_bytes(b"x" * 1000)
    with session_scope(engine) as session:
        job = queue.submit(session, "sleep", {"seconds": 60}, owner="test")
    worker = subprocess.Popen(
        [sys.executable, "-m", "sctk", "worker", "--concurrency", "1", "--grace", "0"],
        env={
            **{k: v for k, v in __import__("os").environ.items() if not k.startswith("SCTK_")},
            "SCTK_HOME": str(settings.home),
            "SCTK_EXECUTOR__PROCESSES": "1",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def running():
            with session_scope(engine) as session:
                return queue.get(session, job.id).status == "running"

        wait_until(running, timeout=60, what="the sleep job to start")

        def pool_pids():
            return sorted(p.pid for p in job_pool_processes() if p.parent().pid == worker.pid)

        def settled_pool_pids():
            # the same processes half a second apart: the pool that runs the job, not a
            # process caught while the worker was still starting its pool
            first = pool_pids()
            time.sleep(0.5)
            return first if first and first == pool_pids() else None

        pools = wait_until(settled_pool_pids, timeout=60, what="the worker's job process")

        with Runtime(s) as rt:
            report = run_emergency(rt, actor="ops", reason="disk filling", restore="no")
    finally:
        worker.terminate()
        worker.wait(30)

    steps = {st.name: st for st in report.steps}
    assert list(steps) == ["assess", "isolate", "restart_workers", "clear_tmp", "notify", "verify"]
    assert set(pools) <= set(steps["restart_workers"].details["pids"])
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pools)
    assert steps["clear_tmp"].details["removed"] == ["upload.part"]
    assert steps["notify"].ok and steps["notify"].details["delivered"] == ["log", "webhook"]
    (body,) = webhook.bodies
    assert "emergency response" in json.dumps(body)
    assert report.recovered and steps["verify"].details["resumed"]
    with session_scope(engine) as session:
        assert not switches.is_on(session, switches.JOBS_PAUSED)
        shown = incidents.show(session, report.incident_id)
        assert shown["severity"] == "critical" and "disk filling" in shown["title"]
        kinds = [e["kind"] for e in shown["timeline"]]
        assert kinds[1:] == [f"emergency.{n}" for n in steps]


@pytest.mark.exclusive
def test_the_restore_step_brings_back_a_damaged_file(settings, engine, runtime, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    populate(settings, model=False)
    init_repo(settings)
    snap = create_backup(runtime, "daily")["id"]
    repo = open_repo(settings)
    repo.mark_verified(snap, {"read_data": True})
    (stored,) = [p for p in (settings.home / "data").rglob("*") if p.is_file()]
    good = stored.read_bytes()
    stored.write_bytes(b"garbage")

    asked = []
    report = run_emergency(
        runtime,
        actor="ops",
        restore="ask",
        confirm=lambda q: asked.append(q) or True,
        keep_paused=True,
    )
    assert asked and snap[:8] in asked[0]
    restore = next(st for st in report.steps if st.name == "restore")
    assert restore.ok, restore.summary
    assert stored.read_bytes() == good
    with session_scope(engine) as session:
        assert switches.is_on(session, switches.JOBS_PAUSED)  # --keep-paused


@sqlite_only
def test_cli_refusals(settings):
    r = run_sctk("emergency", "--incident", "999", "--no-restore", home=settings.home)
    assert r.returncode != 0 and "999" in r.stderr
    with_incidents = run_sctk("incident", "list", "--json", home=settings.home)
    assert json.loads(with_incidents.stdout) == []  # nothing was opened or changed
    r = run_sctk("emergency", "--yes", "--no-restore", home=settings.home)
    assert r.returncode != 0
    assert "--yes and --no-restore contradict each other" in r.stderr
