"""Faults with real parts: a PostgreSQL server stopped and started under load, a backup
repository on a full file system, a webhook that never answers, a worker killed during a
training job. Each test checks that sctk notices, says so, loses nothing and recovers by
itself."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select, text

from sctk import config
from sctk.ops.init_home import init_home
from sctk.storage.engine import make_engine, session_scope
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
                lambda: (
                    503 in poller.statuses("/health/ready", stopped_at)
                    and 503 in poller.statuses("/api/v1/jobs?limit=20", stopped_at)
                ),
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
    assert 200 in poller.statuses("/api/v1/jobs?limit=20", started_at)
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


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def sctk_here(monkeypatch, capsys):
    """The CLI's entry point run in this process (a subprocess pays seconds of imports per
    call on a loaded machine); the failing command itself runs as a real subprocess."""
    from sctk.cli import main

    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, home: Path, env: dict[str, str]) -> Ran:
        monkeypatch.setenv("SCTK_HOME", str(home))
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return Ran(code, out.out, out.err)

    return run


def _used_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_backup_to_a_full_file_system_fails_cleanly_through_the_cli(small_fs, tmp_path, sctk_here):
    """End to end through the `sctk` command (tests/backup/repo covers the engine alone)."""
    home = tmp_path / "home"
    repo = small_fs / "repo"
    env = {"SCTK_BACKUP_PASSPHRASE": PASSPHRASE}

    def ok_json(*args: str) -> Any:
        done = sctk_here(*args, "--json", home=home, env=env)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)

    init_home(home)
    assert (
        sctk_here("config", "set", "backup.repository", str(repo), home=home, env=env).returncode
        == 0
    )
    assert ok_json("backup", "init")["created"] is True

    # a first, small snapshot: the one the failure must not damage
    (home / "data" / "notes.txt").write_text("first snapshot\n" * 100)
    first = ok_json("backup", "create")
    repo_after_first = _used_bytes(repo)

    # ~20 MB of incompressible data for an 8 MiB disk, backed up as a user would
    (home / "data" / "big.bin").write_bytes(os.urandom(20_000_000))
    failed = run_sctk("backup", "create", home=home, env=env)
    assert failed.returncode != 0
    assert "Traceback" not in failed.stderr + failed.stdout
    message = failed.stderr.strip()
    assert "\n" not in message, message
    assert message.startswith(f"Error: No space left on the device holding repository {repo}")
    assert "free some space" in message and message.endswith("."), message

    # no snapshot of the failed run, nothing of it left on the disk, the repository whole
    assert [s["id"] for s in ok_json("backup", "list")] == [first["id"]]
    assert _used_bytes(repo) <= repo_after_first + 64 * 1024, "the failed run left data behind"
    verified = ok_json("backup", "verify", "--read-data")
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
    second = ok_json("backup", "create")
    assert sorted(s["id"] for s in ok_json("backup", "list")) == sorted([first["id"], second["id"]])
    verified = ok_json("backup", "verify", "--read-data")
    assert verified["ok"] is True and verified["check"]["snapshots"] == 2


# -- a notifier endpoint that hangs ------------------------------------------------------------


class HangingEndpoint:
    """A TCP server that accepts every connection and never answers a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/services/T0/B0/hook-token"
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)  # held open, never read from or written to
            self.accepted += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self.sock.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_hanging_webhook_never_holds_up_alert_processing(settings, tmp_path):
    from sqlalchemy.orm import sessionmaker

    from sctk.monitoring.alert_engine import start_engine
    from sctk.monitoring.clock import ManualClock
    from sctk.monitoring.notifiers import set_webhook
    from sctk.security.keyring import Keyring
    from sctk.storage.models import Alert, NotificationAttempt

    timeout, attempts_per_note = 0.5, 2
    alerting = {
        "rules": [{"metric": "cpu_percent", "warning": 70, "for_seconds": 2}],
        "trend_rules": [],
        "cooldown_seconds": 3,
        "channels": ["log", "webhook"],
        "webhook_timeout_seconds": timeout,
        "max_attempts": attempts_per_note,
        "backoff_seconds": 0.1,
    }
    cfg = config.load(settings.home, {"alerts": alerting}).settings
    hook = HangingEndpoint()
    engine = make_engine(cfg)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions() as s:
        set_webhook(s, Keyring.load(cfg.home), hook.url, actor="tests")
        s.commit()
    clock = ManualClock()
    alerts = start_engine(cfg, sessions, clock=clock)
    try:
        # two episodes in simulated time: each fires, then resolves after the cooldown
        series = ([95.0] * 5 + [20.0] * 8) * 2
        observe_seconds = []
        loop_start = time.monotonic()
        for value in series:
            start = time.perf_counter()
            alerts.observe(clock.advance(1), {"cpu_percent": value})
            observe_seconds.append(time.perf_counter() - start)
        loop_seconds = time.monotonic() - loop_start

        with sessions() as s:
            rows = list(s.scalars(select(Alert).order_by(Alert.id)))
            webhook_done_by_then = len(
                list(
                    s.scalars(
                        select(NotificationAttempt).where(NotificationAttempt.channel == "webhook")
                    )
                )
            )
        # every notice queued for the webhook: 2 firings + 2 resolutions, 2 tries each
        expected = 4 * attempts_per_note
        drain_start = time.monotonic()
        assert alerts.dispatcher.drain(expected * (timeout + 2) + 10), "deliveries never ended"
        drained = time.monotonic() - drain_start
    finally:
        alerts.close(timeout=5)
        hook.close()

    # the engine went on: every episode fired and resolved, each sample handled at once
    assert [(a.severity, a.status) for a in rows] == [("warning", "resolved")] * 2
    assert max(observe_seconds) < 1.0, f"observe() took up to {max(observe_seconds):.2f} s"
    assert webhook_done_by_then < expected, "the samples waited for the webhook"
    assert hook.accepted >= 1

    with sessions() as s:
        tried = list(s.scalars(select(NotificationAttempt).order_by(NotificationAttempt.id)))
    engine.dispose()
    webhook = [a for a in tried if a.channel == "webhook"]
    log_channel = [a for a in tried if a.channel == "log"]
    # the log channel was not stuck behind the webhook: all four notices
    assert [(a.kind, a.ok) for a in log_channel] == [("firing", True), ("resolved", True)] * 2
    # every webhook attempt ended at its timeout and is recorded as failed, secret-free
    assert len(webhook) == expected
    assert [a.attempt for a in webhook] == [1, 2] * 4
    for a in webhook:
        assert a.ok is False
        assert f"did not answer within {timeout:g} s" in a.error
        assert "hook-token" not in a.error
        assert timeout * 1000 * 0.9 <= a.duration_ms < (timeout + 4) * 1000, a.duration_ms
    print(
        f"\nHanging webhook: {len(series)} samples in {loop_seconds:.2f} s "
        f"(slowest observe {max(observe_seconds) * 1000:.1f} ms); {len(webhook)} webhook "
        f"attempts failed at the {timeout:g} s timeout, drained {drained:.1f} s later"
    )


# -- a worker killed during a training job ---------------------------------------------------

WORKER_ENV = {
    "SCTK_JOBS__HEARTBEAT_SECONDS": "0.5",
    "SCTK_JOBS__STALE_AFTER_SECONDS": "4",
    "SCTK_JOBS__POLL_SECONDS": "0.1",
    "SCTK_JOBS__BACKOFF_SECONDS": "0",
    "SCTK_EXECUTOR__PROCESSES": "1",
}


class WorkerProcess:
    """`sctk worker` in a process group of its own (the worker and its pool's processes)."""

    def __init__(self, home: Path, log_dir: Path, name: str):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
        env.update({"SCTK_HOME": str(home), "COLUMNS": "200", **WORKER_ENV})
        self.log = log_dir / f"{name}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sctk", "worker", "--concurrency", "1"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )

    def kill_group(self) -> None:
        """kill -9 of the whole group: the worker and the process running the job."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        self.kill_group()


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_worker_killed_during_training_the_job_reruns_and_registers_once(settings, tmp_path):
    import psutil

    from sctk.jobs import events, queue
    from sctk.uq import registry
    from tests.uq.registry_helpers import frame, import_csv, train_params

    import_csv(settings, frame(n=600), "runs")
    # long enough (a second or more) that the kill lands mid-training, short enough to rerun
    params = train_params(config={"epochs": 100, "hidden": [32, 32], "patience": 100})
    engine = make_engine(settings)

    def job() -> dict:
        with session_scope(engine) as s:
            return queue.as_dict(queue.get(s, job_id))

    with session_scope(engine) as s:
        job_id = queue.submit(s, "uq.train", params, owner="tests").id
    victim = WorkerProcess(settings.home, tmp_path, "victim")
    rescuer = None
    try:
        claimed = wait_until(
            lambda: job()["status"] == "running" and job(),
            timeout=60,
            interval=0.1,
            what="the victim to claim the training job",
        )
        assert int(claimed["worker"].split(":")[1]) == victim.proc.pid
        # the second worker starts now, so that its start-up overlaps the first try's
        rescuer = WorkerProcess(settings.home, tmp_path, "rescuer")
        wait_until(
            lambda: job()["progress"] > 0,
            timeout=120,
            interval=0.1,
            what="the training job to report progress",
        )
        assert job()["worker"] == claimed["worker"]  # the rescuer took nothing from it
        pool = [p.pid for p in psutil.Process(victim.proc.pid).children(recursive=True)]
        victim.kill_group()
        wait_until(
            lambda: all(_gone(pid) for pid in pool), timeout=15, what="the pool process to die"
        )
        assert job()["status"] == "running"  # nobody has noticed yet
        done = wait_until(
            lambda: job()["status"] in queue.FINISHED and job(),
            timeout=180,
            interval=0.2,
            what="the training job to run again and finish",
        )
    finally:
        victim.stop()
        if rescuer is not None:
            rescuer.stop()

    assert done["status"] == "succeeded", (done["error"], rescuer.log.read_text()[-3000:])
    assert done["attempts"] == 2
    assert int(done["worker"].split(":")[1]) == rescuer.proc.pid
    with session_scope(engine) as s:
        history = events.history(s, job_id)
        models = registry.list_models(s)
    engine.dispose()
    statuses = [e.data["status"] for e in history if e.kind == "status"]
    assert statuses == ["queued", "running", "queued", "running", "succeeded"]
    requeue = [e for e in history if e.kind == "status"][2]
    assert "sent no heartbeat" in requeue.data["reason"], requeue.data
    # the killed try got somewhere (progress) but never reached the registry
    first_try = [e for e in history if e.kind == "progress" and e.seq < requeue.seq]
    assert first_try and max(e.data["fraction"] for e in first_try) < 1.0
    assert [(m.name, m.version) for m in models] == [("drag", 1)]
    assert done["result"]["model"]["id"] == models[0].id
    assert registry.model_file(settings.home, models[0]).is_file()
