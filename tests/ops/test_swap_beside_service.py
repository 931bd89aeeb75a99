"""Nothing swaps or migrates a data directory under a running service: rollback and upgrade
refuse while `sctk serve` runs on the home (one rule with restore), leaving the database file
itself untouched; and audit and doctor report the address the service really serves on,
which `serve --port` made another than the configured one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sctk import config, runstate
from sctk.backup.create import create_backup
from sctk.backup.location import init_repo
from sctk.ops.init_home import init_home
from sctk.ops.upgrade import PRE_UPDATE
from sctk.runtime import Runtime
from tests.backup.backup_support import ENV
from tests.helpers import free_port, run_sctk, wait_until

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def serving(tmp_path_factory) -> Iterator[tuple[Path, int, int, int]]:
    """A home (SQLite) with a real `sctk serve --port P` on it, P not the configured port."""
    home = tmp_path_factory.mktemp("served") / "home"
    init_home(home)
    with pytest.MonkeyPatch.context() as mp:  # a pre-update snapshot, so rollback has one
        for k, v in ENV.items():
            mp.setenv(k, v)
        settings = config.load(home).settings
        init_repo(settings)
        with Runtime(settings) as rt:
            create_backup(rt, PRE_UPDATE, actor="tests")
    configured, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update(
        SCTK_HOME=str(home),
        SCTK_JOBS__WORKERS="0",
        SCTK_SERVER__PORT=str(configured),
        SCTK_ADMIN_PASSWORD="Basalt-Orchid-7781",
        **ENV,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sctk", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(answers, timeout=90, what="sctk serve")
        wait_until(lambda: runstate.running_pid(home) == proc.pid, timeout=30, what="pid file")
        yield home, proc.pid, port, configured
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _inode(home: Path) -> int:
    return (home / "sctk.db").stat().st_ino


def test_rollback_is_refused_while_a_service_runs(serving):
    home, pid, _, configured = serving
    before = _inode(home)
    env = {**ENV, "SCTK_SERVER__PORT": str(configured)}
    r = run_sctk("rollback", "--yes", home=home, env=env)
    assert r.returncode != 0
    assert f"A service (pid {pid}, role all) is running on {home}" in r.stderr
    assert f"kill -TERM {pid}" in r.stderr and "Traceback" not in r.stderr
    assert _inode(home) == before


def test_upgrade_is_refused_while_a_service_runs(serving):
    home, pid, _, configured = serving
    before = _inode(home)
    env = {
        **ENV,
        "SCTK_SERVER__PORT": str(configured),
        "SCTK_EXTRA_MIGRATIONS": str(HERE / "good_migrations"),
    }
    r = run_sctk("upgrade", "--yes", home=home, env=env)
    assert r.returncode != 0
    assert f"A service (pid {pid}, role all) is running on {home}: the upgrade" in r.stderr
    assert _inode(home) == before


def test_audit_and_doctor_report_the_served_port(serving):
    home, pid, port, configured = serving
    env = {"SCTK_SERVER__PORT": str(configured)}
    r = run_sctk("compliance", "--format", "json", home=home, env=env)
    assert r.returncode == 0, r.stderr
    checks = json.loads(r.stdout)["checks"]
    (plain,) = [c for c in checks if c["name"] == "plain HTTP beyond loopback"]
    assert plain["evidence"] == f"serves (pid {pid}) on 127.0.0.1:{port} without TLS"
    r = run_sctk("doctor", "startup", "--json", home=home, env=env)
    found = {f["name"]: f for f in json.loads(r.stdout)["findings"]}
    assert found["port"]["message"] == (
        f"sctk already serves this data directory (pid {pid}) on http://127.0.0.1:{port}"
    )
