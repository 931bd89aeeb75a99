"""Every service process of a home is seen (one record each: API processes, workers), and
`--coordinate` swaps the data directory under a running service by pausing it: the same
process answers afterwards from the new database file; a service that never acknowledges
makes the command give up with one sentence and nothing swapped."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sctk import config, runstate
from sctk.backup.create import create_backup
from sctk.backup.location import init_repo
from sctk.errors import Conflict
from sctk.logs import LOG_FILE
from sctk.ops import upgrade as up
from sctk.ops.init_home import init_home
from sctk.runtime import Runtime
from sctk.storage.engine import make_engine
from sctk.storage.migrate import head
from tests.backup.backup_support import ENV
from tests.helpers import free_port, run_sctk, wait_until
from tests.security.conftest import ACCOUNTS, bearer, create_user

ADMIN = ACCOUNTS["admin"]


def _home(tmp_path: Path, monkeypatch, database_url: str | None = None) -> Path:
    """A home (SQLite unless DATABASE_URL) with an admin and a pre-update snapshot, so that
    rollback has one."""
    home = tmp_path / "home"
    init_home(home, database_url=database_url)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    settings = config.load(home).settings
    engine = make_engine(settings)
    create_user(engine, ADMIN.username, ADMIN.password, "admin")
    engine.dispose()
    init_repo(settings)
    with Runtime(settings) as rt:
        create_backup(rt, up.PRE_UPDATE, actor="tests")
    return home


def _spawn(home: Path, *args: str, **extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update({"SCTK_HOME": str(home), "SCTK_JOBS__WORKERS": "0", **ENV, **extra})
    return subprocess.Popen(
        [sys.executable, "-m", "sctk", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _pids(home: Path) -> set[int]:
    return {s.pid for s in runstate.services(home)}


def _inode(home: Path) -> int:
    return (home / "sctk.db").stat().st_ino


def test_every_service_process_of_a_home_is_seen(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    first = _spawn(home, "serve", "--role", "api", "--port", str(free_port()))
    second = _spawn(home, "serve", "--role", "api", "--port", str(free_port()))
    worker = _spawn(home, "worker", SCTK_JOBS__WORKERS="1")
    try:
        everyone = {first.pid, second.pid, worker.pid}
        wait_until(lambda: _pids(home) == everyone, timeout=120, what="three records")
        roles = {s.pid: s.role for s in runstate.services(home)}
        assert roles == {first.pid: "api", second.pid: "api", worker.pid: "worker"}
        before = _inode(home)

        r = run_sctk("rollback", "--yes", home=home, env=ENV)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert f"3 service processes (pid {first.pid}, role api; pid {second.pid}" in r.stderr
        assert f"kill -TERM {first.pid} {second.pid} {worker.pid}" in r.stderr

        _stop(first)  # one API process stops: the other and the worker still count
        assert not runstate.pid_path(home, first.pid).exists()
        r = run_sctk("rollback", "--yes", home=home, env=ENV)
        assert r.returncode != 0
        assert (
            f"2 service processes (pid {second.pid}, role api; pid {worker.pid}, role worker)"
            in r.stderr
        )
        assert f"pid {first.pid}," not in r.stderr

        _stop(second)  # the worker alone still counts
        r = run_sctk("rollback", "--yes", home=home, env=ENV)
        assert r.returncode != 0
        assert f"A service (pid {worker.pid}, role worker) is running on {home}" in r.stderr
        assert _inode(home) == before
    finally:
        _stop(first, second, worker)
    assert _pids(home) == set() and not list(runstate.run_dir(home).iterdir())


def test_rollback_coordinated_under_a_running_service(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    port = free_port()
    proc = _spawn(home, "serve", "--port", str(port), SCTK_JOBS__WORKERS="1")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _pids(home) == {proc.pid}, timeout=120, what="the service's record")
        with httpx.Client(base_url=url, timeout=30) as http:
            wait_until(lambda: http.get("/health/live").status_code == 200, timeout=60)

            def login() -> dict[str, str]:
                r = http.post(
                    "/api/v1/auth/token",
                    json={"username": ADMIN.username, "password": ADMIN.password},
                )
                assert r.status_code == 200, r.text
                return bearer(r.json()["access_token"])

            h = login()
            assert http.post("/api/v1/tokens", json={"name": "before"}, headers=h).is_success

            # a coordinator that dies while it holds the service paused: the service resumes
            code = (
                "import sys, time; from sctk import runstate\n"
                "with runstate.paused_services(sys.argv[1], 'a test'):\n"
                "    print('paused', flush=True); time.sleep(120)"
            )
            holder = subprocess.Popen(
                [sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True
            )
            try:
                assert holder.stdout.readline().strip() == "paused"
                refused = http.get("/health/ready")
                assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
                assert "paused" in refused.json()["detail"]
                assert http.get("/health/live").status_code == 200
            finally:
                holder.kill()
                holder.wait()
            wait_until(
                lambda: http.get("/health/ready").status_code == 200,
                timeout=30,
                what="the service to resume after its coordinator died",
            )
            before = _inode(home)

            r = run_sctk("rollback", "--yes", "--coordinate", home=home, env=ENV)
            assert r.returncode == 0, r.stderr
            assert "rolled back to pre-update snapshot" in r.stdout

            assert _inode(home) != before  # the file was swapped ...
            assert proc.poll() is None  # ... under the same, still running process
            assert _pids(home) == {proc.pid}
            assert sorted(p.name for p in runstate.run_dir(home).iterdir()) == [str(proc.pid)]
            h = login()
            ready = http.get("/health/ready", headers=h)
            assert ready.status_code == 200, ready.text
            (migrations,) = [c for c in ready.json()["checks"] if c["name"] == "migrations"]
            assert migrations["status"] == "OK" and head() in migrations["message"]
            made = http.post("/api/v1/tokens", json={"name": "after-swap"}, headers=h)
            assert made.status_code == 201, made.text
    finally:
        _stop(proc)
    with sqlite3.connect(home / "sctk.db") as db:  # the new file holds what came after
        names = {name for (name,) in db.execute("SELECT name FROM api_tokens")}
    assert "after-swap" in names and "before" not in names


def test_a_service_that_never_pauses_stops_the_command(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    # a process that wrote its record and then stopped answering (SIGSTOP)
    code = (
        "import sys, time; from sctk import runstate; "
        "runstate.write_pid(sys.argv[1], role='api'); print('ok', flush=True); time.sleep(120)"
    )
    frozen = subprocess.Popen(
        [sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert frozen.stdout.readline().strip() == "ok"
        os.kill(frozen.pid, signal.SIGSTOP)
        monkeypatch.setattr(runstate, "PAUSE_TIMEOUT", 1.5)
        settings = config.load(home).settings
        before = _inode(home)
        with (
            Runtime(settings) as rt,
            pytest.raises(Conflict) as refused,
            runstate.coordinated(home, "the rollback", coordinate=True),
        ):
            up.rollback(rt, actor="tests")
        assert str(refused.value) == (
            f"The service process(es) {frozen.pid} on {home} did not pause within 1.5 s, so "
            "the rollback did not start and nothing was changed; see that they answer (or "
            "stop them), then run it again."
        )
        assert _inode(home) == before
        assert not (runstate.run_dir(home) / runstate.PAUSE).exists()
    finally:
        os.kill(frozen.pid, signal.SIGKILL)
        frozen.wait()


def test_a_service_starting_during_a_coordinated_swap_waits_for_its_end(tmp_path, monkeypatch):
    home = _home(tmp_path, monkeypatch)
    log = home / "logs" / LOG_FILE
    with runstate.paused_services(home, "a test"):  # none runs: the request is there anyway
        worker = _spawn(home, "worker", SCTK_JOBS__WORKERS="1")
        try:
            wait_until(
                lambda: log.exists() and "is swapping the data directory" in log.read_text(),
                timeout=60,
                what="the worker to wait",
            )
            assert worker.poll() is None and _pids(home) == set()
        except BaseException:
            _stop(worker)
            raise
    try:
        wait_until(lambda: _pids(home) == {worker.pid}, timeout=60, what="the worker to start")
    finally:
        _stop(worker)


def test_restore_coordinated_under_a_service_on_postgresql(tmp_path, monkeypatch, pg_migrated_url):
    home = _home(tmp_path, monkeypatch, pg_migrated_url)
    port = free_port()
    proc = _spawn(home, "serve", "--port", str(port), SCTK_JOBS__WORKERS="1")
    try:
        wait_until(lambda: _pids(home) == {proc.pid}, timeout=120, what="the service's record")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            wait_until(lambda: http.get("/health/live").status_code == 200, timeout=60)

            def login() -> dict[str, str]:
                r = http.post(
                    "/api/v1/auth/token",
                    json={"username": ADMIN.username, "password": ADMIN.password},
                )
                assert r.status_code == 200, r.text
                return bearer(r.json()["access_token"])

            h = login()
            assert http.post("/api/v1/tokens", json={"name": "before"}, headers=h).is_success
            r = run_sctk(
                "restore", "--latest", "--include-safety", "--coordinate",
                home=home, env=ENV, timeout=300,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            assert proc.poll() is None and _pids(home) == {proc.pid}
            h = login()
            assert http.get("/health/ready", headers=h).status_code == 200
            made = http.post("/api/v1/tokens", json={"name": "after-restore"}, headers=h)
            assert made.status_code == 201, made.text
    finally:
        _stop(proc)
    engine = make_engine(config.load(home).settings)
    try:
        with engine.connect() as db:
            names = {name for (name,) in db.exec_driver_sql("SELECT name FROM api_tokens")}
    finally:
        engine.dispose()
    assert "after-restore" in names and "before" not in names
