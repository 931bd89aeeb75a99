"""Workers in separate processes: many claiming at once, one killed mid-job, clean stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import psutil
import pytest

from sctk.jobs import events, queue
from sctk.storage.engine import session_scope
from tests.helpers import wait_until
from tests.jobs.conftest import job_dict, status_of, submit
from tests.security.conftest import sqlite_only

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# Short timings for the workers these tests start (they read them from the environment).
FAST_ENV = {
    "SCTK_JOBS__HEARTBEAT_SECONDS": "0.2",
    "SCTK_JOBS__STALE_AFTER_SECONDS": "1.5",
    "SCTK_JOBS__POLL_SECONDS": "0.1",
    "SCTK_EXECUTOR__PROCESSES": "1",
}


def worker_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update({"SCTK_HOME": str(home), "COLUMNS": "200", **FAST_ENV, **extra})
    return env


# The `sctk` command itself (sctk.cli:main), with the test kinds registered first.
SCTK_WITH_TEST_KINDS = "import tests.jobs.kinds_for_tests; from sctk.cli import main; main()"


class SctkWorker:
    """`sctk worker` in a subprocess, its output in files (a pipe nobody reads could fill)."""

    def __init__(self, home: Path, log_dir: Path, name: str, *args: str):
        self.out = log_dir / f"{name}.out"
        self.err = log_dir / f"{name}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SCTK_WITH_TEST_KINDS, "worker", "--concurrency", "1", *args],
                stdout=out,
                stderr=err,
                env=worker_env(home),
                cwd=ROOT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def pid_of(worker_id: str | None) -> int | None:
    """Worker ids are host:pid:random."""
    return int(worker_id.split(":")[1]) if worker_id else None


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# A race between the workers: on its own, so that it is the workers who race (on a busy
# machine a worker starved of CPU can see the others take every job before it claims one).
# As it runs alone, its length is the suite's. 200 jobs on PostgreSQL are enough: with the
# claim's row lock removed (FOR UPDATE SKIP LOCKED dropped), 200 jobs ran 6 to 15 of them
# twice in each of five runs (500 jobs: 19), where 2.5x as many cost about 6 s more.
@pytest.mark.exclusive
@pytest.mark.parametrize(
    "backend, processes, jobs",
    [("sqlite", 2, 100), pytest.param("postgres", 4, 200, marks=pytest.mark.postgres)],
)
def test_every_job_runs_exactly_once_across_worker_processes(
    settings, engine, tmp_path, processes, jobs
):
    runs = tmp_path / "runs.log"
    with session_scope(engine) as s:
        ids = [
            # 10 ms each: one worker alone would take a second or more, so every worker,
            # however late the machine lets it start, claims some (asserted at the end)
            queue.submit(s, "test.record", {"path": str(runs), "seconds": 0.01}, owner="tests").id
            for _ in range(jobs)
        ]
    go = tmp_path / "go"
    # A lease far longer than any stall of a loaded machine: within it a worker keeps its job,
    # and exactly-once is what is tested. (A job whose worker is silent for longer than the
    # lease runs again, by design: that is the crash test below, with a 1.5 s lease.)
    env = worker_env(settings.home, SCTK_JOBS__STALE_AFTER_SECONDS="120")
    workers = []
    try:
        for i in range(processes):
            ready = tmp_path / f"ready-{i}"
            out = open(tmp_path / f"worker-{i}.out", "w+")  # noqa: SIM115 - closed below
            err = open(tmp_path / f"worker-{i}.err", "w+")  # noqa: SIM115
            command = [sys.executable, "-m", "tests.jobs.worker_proc", str(settings.home), "1"]
            proc = subprocess.Popen(
                [*command, str(ready), str(go)], stdout=out, stderr=err, env=env, cwd=ROOT
            )
            workers.append((ready, proc, out, err))
        # every worker has warmed up its pool before any claims: they all race from the start
        wait_until(
            lambda: all(w[0].exists() or w[1].poll() is not None for w in workers),
            timeout=120,
            what="the worker processes to start",
        )
        go.touch()
        for _, proc, _, _ in workers:
            proc.wait(timeout=240)
        stats = []
        for _, proc, out, err in workers:
            out.seek(0)
            err.seek(0)
            output, errors = out.read(), err.read()
            assert proc.returncode == 0, errors[-3000:]
            stats.append(json.loads(output.strip().splitlines()[-1]))
    finally:
        for _, proc, out, err in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            out.close()
            err.close()

    ran = Counter(int(line.split()[0]) for line in runs.read_text().splitlines())
    duplicates = {job_id: n for job_id, n in ran.items() if n > 1}
    assert not duplicates, f"jobs run more than once: {duplicates}"
    assert sorted(ran) == sorted(ids), "every job ran"
    assert sum(s.get("succeeded", 0) for s in stats) == jobs, stats
    assert sum(s.get("claimed", 0) for s in stats) == jobs, stats
    with session_scope(engine) as s:
        assert queue.counts(s)["succeeded"] == jobs
        rows = queue.list_jobs(s, limit=jobs)
        assert {j.attempts for j in rows} == {1}
        claims = Counter(
            e.job_id
            for job_id in ids[:: max(1, jobs // 50)]  # a sample: one claim event per job
            for e in events.history(s, job_id)
            if e.data.get("status") == "running"
        )
    assert set(claims.values()) == {1}
    by_worker = Counter(j.worker for j in rows)
    assert set(by_worker) <= {s["id"] for s in stats}
    assert len(by_worker) >= 2, f"only one worker got jobs: {by_worker}"


def test_a_killed_workers_job_is_rerun_by_another_and_others_are_unaffected(
    settings, engine, tmp_path
):
    first = submit(engine, "test.hang_first_try", {"marker": str(tmp_path / "tried")})
    victim = SctkWorker(settings.home, tmp_path, "victim")
    survivor = None
    try:
        wait_until(lambda: job_dict(engine, first)["progress"] > 0, timeout=90, what="progress")
        victim_id = job_dict(engine, first)["worker"]
        assert pid_of(victim_id) == victim.pid
        # a second worker, with a job of its own running while the victim dies
        survivor = SctkWorker(settings.home, tmp_path, "survivor", "--concurrency", "2")
        second = submit(engine, "sleep", {"seconds": 2, "steps": 20})
        wait_until(lambda: job_dict(engine, second)["progress"] > 0, timeout=90, what="second")
        survivor_id = job_dict(engine, second)["worker"]
        assert pid_of(survivor_id) == survivor.pid
        children = [c.pid for c in psutil.Process(victim.pid).children(recursive=True)]
        assert job_dict(engine, first)["status"] == "running"

        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(timeout=30)
        later = [submit(engine, "noop", {"echo": i}) for i in range(3)]
        # the victim's pool process notices and ends too, rather than run an unowned job on
        wait_until(lambda: all(gone(pid) for pid in children), timeout=30, what="orphans to end")

        wait_until(lambda: status_of(engine, first) == "succeeded", timeout=90, what="the rerun")
        job = job_dict(engine, first)
        assert job["attempts"] == 2 and job["worker"] == survivor_id
        assert job["result"] == {"rerun": True}
        with session_scope(engine) as s:
            statuses = [e.data for e in events.history(s, first) if e.kind == "status"]
        assert [d["status"] for d in statuses] == [
            "queued", "running", "queued", "running", "succeeded"
        ]  # fmt: skip
        assert statuses[1]["worker"] == victim_id and statuses[3]["worker"] == survivor_id
        assert f"worker {victim_id} sent no heartbeat for 1.5 s" in statuses[2]["reason"]

        # the other jobs never noticed
        wait_until(
            lambda: all(status_of(engine, j) == "succeeded" for j in [second, *later]),
            timeout=60,
            what="the other jobs",
        )
        for job_id in [second, *later]:
            other = job_dict(engine, job_id)
            assert other["attempts"] == 1 and other["worker"] == survivor_id, other

        survivor.proc.send_signal(signal.SIGTERM)
        assert survivor.proc.wait(timeout=60) == 0, survivor.output()
        assert "worker stopped" in survivor.output()
    finally:
        victim.stop()
        if survivor is not None:
            survivor.stop()


@sqlite_only
def test_sctk_worker_stops_cleanly_on_sigterm(settings, engine, tmp_path):
    # within the grace period a running job finishes
    short = submit(engine, "sleep", {"seconds": 1.5, "steps": 15})
    worker = SctkWorker(settings.home, tmp_path, "graceful", "--grace", "60")
    try:
        wait_until(lambda: job_dict(engine, short)["progress"] > 0, timeout=60, what="progress")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=60) == 0, worker.output()
    finally:
        worker.stop()
    assert status_of(engine, short) == "succeeded"

    # past it, the job goes back to the queue, its try not counted, and the exit is still 0
    long = submit(engine, "sleep", {"seconds": 60, "steps": 600})
    worker = SctkWorker(settings.home, tmp_path, "impatient", "--grace", "0")
    try:
        wait_until(lambda: job_dict(engine, long)["progress"] > 0, timeout=60, what="progress")
        children = [c.pid for c in psutil.Process(worker.pid).children(recursive=True)]
        worker.proc.send_signal(signal.SIGINT)
        assert worker.proc.wait(timeout=60) == 0, worker.output()
    finally:
        worker.stop()
    job = job_dict(engine, long)
    assert job["status"] == "queued" and job["attempts"] == 0 and job["worker"] is None
    wait_until(lambda: all(gone(pid) for pid in children), timeout=30, what="its processes")
    assert "1 released" in worker.output()


@sqlite_only
def test_sctk_worker_until_idle(settings, engine, tmp_path):
    ids = [submit(engine, "noop", {"echo": i}) for i in range(5)]
    worker = SctkWorker(settings.home, tmp_path, "batch", "--until-idle")
    try:
        assert worker.proc.wait(timeout=120) == 0, worker.output()
    finally:
        worker.stop()
    assert all(status_of(engine, j) == "succeeded" for j in ids)
    assert "worker stopped: 5 claimed" in worker.output()
