"""Faults with real parts: a PostgreSQL server stopped and started under load, a backup
repository on a full file system, a webhook that never answers, a worker killed during a
training job. Each test checks that sctk notices, says so, loses nothing and recovers by
itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from sctk import config
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.layout import init_home
from tests.helpers import LiveServer, free_port, run_sctk, wait_until
from tests.security.conftest import bearer, create_token, create_user

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PROBLEM_JSON = "application/problem+json"
PASSPHRASE = "cobalt-meridian-sparrow-2718"


# -- a PostgreSQL server of the test's own --------------------------------------------------


def _as_postgres(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as the `postgres` user (the server refuses to run as root)."""
    command = list(args)
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


class PrivatePostgres:
    """initdb + pg_ctl in a temporary directory on a free loopback port, trust auth.

    The machine's shared server is used by other tests and other people; this one may be
    stopped and started at will."""

    def __init__(self) -> None:
        # not under pytest's tmp_path: its parents are 0700 root, out of the postgres user's reach
        self.dir = Path(tempfile.mkdtemp(prefix="sctk-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/sctk"

    def _ctl(self, *args: str) -> None:
        done = _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args)
        assert done.returncode == 0, f"pg_ctl {args[0]} failed: {done.stdout}{done.stderr}"

    def init(self) -> PrivatePostgres:
        done = _as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        self.start()
        admin = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE sctk"))
        admin.dispose()
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(self.dir / "server.log"), "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL 15 server programs are missing from {PG_BIN}")
    server = PrivatePostgres()
    try:
        yield server.init()
    finally:
        server.close()


@dataclass
class Poller:
    """Polls endpoints in a thread while the fault happens; every answer is kept."""

    url: str
    token: str
    seen: list[tuple[float, str, int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Poller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        paths = ["/health/ready", "/api/v1/jobs?limit=20", "/health/live"]
        deadline = time.monotonic() + 120  # bounded, whatever happens to the test
        with httpx.Client(base_url=self.url, timeout=15, headers=bearer(self.token)) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                for path in paths:
                    try:
                        r = client.get(path)
                        self.seen.append(
                            (time.monotonic(), path, r.status_code, r.headers["content-type"])
                        )
                    except httpx.HTTPError as exc:  # the API itself must keep answering
                        self.errors.append(f"{path}: {exc!r}")
                self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def statuses(self, path: str, since: float = 0.0) -> list[int]:
        return [code for t, p, code, _ in self.seen if p == path and t >= since]


def test_postgresql_stopped_under_load_service_recovers_and_loses_no_job(private_pg, tmp_path):
    home = tmp_path / "home"
    init_home(home, database_url=private_pg.url)
    overrides = {
        "jobs": {"poll_seconds": 0.1, "heartbeat_seconds": 0.5, "backoff_seconds": 0.2},
        "executor": {"processes": 1},
        "security": {"rate_limit_per_minute": 100_000, "client_rate_limit_per_minute": 100_000},
    }
    settings = config.load(home, overrides).settings
    engine = make_engine(settings)
    create_user(engine, "ana.lyst", "Velvet-Orbit-Meadow-927", "analyst")
    token, _ = create_token(engine, "ana.lyst")
    engine.dispose()

    from sctk.api.app import create_app

    with LiveServer(create_app(settings, workers=1)) as server, server.client() as http:
        auth = bearer(token)
        jobs = []
        for i in range(4):
            r = http.post(
                "/api/v1/jobs",
                json={"kind": "sleep", "params": {"seconds": 1.0, "steps": 5, "n": i}},
                headers=auth,
            )
            assert r.status_code in (200, 201, 202), r.text
            jobs.append(r.json()["id"])
        assert http.get("/health/ready").status_code == 200

        def job(job_id: int) -> dict:
            r = http.get(f"/api/v1/jobs/{job_id}", headers=auth)
            assert r.status_code == 200, r.text
            return r.json()

        # the fault strikes while a job is running and others wait in the queue
        wait_until(lambda: job(jobs[0])["progress"] > 0, timeout=60, what="the first job to run")
        poller = Poller(server.url, token).start()
        try:
            stopped_at = time.monotonic()
            private_pg.stop()
            # down long enough for the poller to meet it on the probe and on the API
            wait_until(
                lambda: 503 in poller.statuses("/health/ready", stopped_at)
                and 503 in poller.statuses("/api/v1/jobs?limit=20", stopped_at),
                timeout=30,
                what="/health/ready and the job list to answer 503 while PostgreSQL is down",
            )
            down = http.get("/health/ready")
            assert down.status_code == 503
            assert down.headers["content-type"].startswith(PROBLEM_JSON)
            body = down.json()
            assert body["status"] == 503 and "database" in body["detail"], body
            assert "Traceback" not in down.text
            listed = http.get("/api/v1/jobs", headers=auth)
            assert listed.status_code == 503, listed.text
            assert listed.headers["content-type"].startswith(PROBLEM_JSON)
            # liveness does not depend on the database: the process is fine, do not kill it
            assert http.get("/health/live").status_code == 200

            started_at = time.monotonic()
            private_pg.start()
            # recovers by itself: no restart of sctk, no operator action
            wait_until(
                lambda: http.get("/health/ready").status_code == 200,
                timeout=30,
                what="/health/ready to recover",
            )
            recovered = time.monotonic() - started_at
            wait_until(
                lambda: all(job(j)["status"] == "succeeded" for j in jobs),
                timeout=90,
                what="every job submitted before the fault to succeed",
            )
        finally:
            poller.stop()
        final = [job(j) for j in jobs]

    assert not poller.errors, poller.errors[:5]
    assert [j["status"] for j in final] == ["succeeded"] * len(jobs)
    assert all(j["result"] == {"slept": 1.0} for j in final), final
    # while down: 503 problem+json only, never a 500 and never a hang
    for _, path, code, ctype in poller.seen:
        assert code in (200, 503), (path, code)
        if code == 503:
            assert ctype.startswith(PROBLEM_JSON), (path, ctype)
    assert 200 in poller.statuses("/health/ready", started_at)  # seen recovering
    assert poller.statuses("/health/live") and set(poller.statuses("/health/live")) == {200}
    print(f"\nPostgreSQL fault: ready again {recovered:.2f} s after the server started; "
          f"attempts per job {[j['attempts'] for j in final]}")  # fmt: skip


# -- the backup repository on a full file system ----------------------------------------------


@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """An 8 MiB tmpfs: a disk that fills up long before a 20 MB backup is written."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _sctk_json(*args: str, home: Path, env: dict[str, str]) -> object:
    done = run_sctk(*args, "--json", home=home, env=env)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return json.loads(done.stdout)


def _used_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_backup_to_a_full_file_system_fails_cleanly_through_the_cli(small_fs, tmp_path):
    """End to end through the `sctk` command (tests/backup/repo covers the engine alone)."""
    home = tmp_path / "home"
    env = {"SCTK_BACKUP_PASSPHRASE": PASSPHRASE}
    assert run_sctk("init", str(home), env=env).returncode == 0
    repo = small_fs / "repo"
    set_repo = run_sctk("config", "set", "backup.repository", str(repo), home=home, env=env)
    assert set_repo.returncode == 0, set_repo.stderr
    assert run_sctk("backup", "init", home=home, env=env).returncode == 0

    # a first, small snapshot: the one the failure must not damage
    (home / "data" / "notes.txt").write_text("first snapshot\n" * 100)
    first = _sctk_json("backup", "create", home=home, env=env)
    repo_after_first = _used_bytes(repo)

    # ~20 MB of incompressible data for an 8 MiB disk
    (home / "data" / "big.bin").write_bytes(os.urandom(20_000_000))
    failed = run_sctk("backup", "create", home=home, env=env)
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr + failed.stdout
    message = failed.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith(f"Error: No space left on the device holding repository {repo}")
    assert "free some space" in message and message.endswith("."), message

    # no snapshot of the failed run, nothing of it left on the disk, the repository whole
    listed = _sctk_json("backup", "list", home=home, env=env)
    assert [s["id"] for s in listed] == [first["id"]]
    assert _used_bytes(repo) <= repo_after_first + 64 * 1024, "the failed run left data behind"
    verified = _sctk_json("backup", "verify", "--read-data", home=home, env=env)
    assert verified["ok"] is True and verified["check"]["errors"] == []
    assert verified["check"]["snapshots"] == 1

    engine = make_engine(config.load(home).settings)
    try:
        from sctk.storage.models import BackupRun

        with session_scope(engine) as s:
            creates = list(
                s.scalars(select(BackupRun).where(BackupRun.kind == "create").order_by("id"))
            )
            assert [r.status for r in creates] == ["succeeded", "failed"]
            assert creates[1].snapshot_id is None and "No space left" in creates[1].message
    finally:
        engine.dispose()

    # space freed: the next backup works, and everything still verifies byte for byte
    (home / "data" / "big.bin").unlink()
    (home / "data" / "more.txt").write_text("second snapshot\n" * 100)
    second = _sctk_json("backup", "create", home=home, env=env)
    listed = _sctk_json("backup", "list", home=home, env=env)
    assert sorted(s["id"] for s in listed) == sorted([first["id"], second["id"]])
    verified = _sctk_json("backup", "verify", "--read-data", home=home, env=env)
    assert verified["ok"] is True and verified["check"]["snapshots"] == 2
