"""Job queue throughput: N no-op jobs end to end through the durable queue.

Run by hand (not a test):

    python benchmarks/bench_jobs.py [--jobs 1000] [--concurrency 2] [--postgres URL] [--no-write]

For each database (SQLite in a temporary data directory; PostgreSQL when --postgres or
SCTK_TEST_POSTGRES_URL names a server, in a fresh database created for the run and dropped
after it):

- submit: N `noop` jobs queued with sctk.jobs.queue.submit in one transaction;
- run: one Worker with the local executor (a 'spawn' process pool, warmed up first) runs
  them with run_until_idle: claim, hand to the pool, record the outcome, with their status
  events (published on the message bus too); jobs/s is N over the wall time of that run.

Peers, in the same run: the `noop` function called directly N times in this process (what
a job does without any queue), and the same N calls through a bare
concurrent.futures.ProcessPoolExecutor of the same size (what the process pool costs without
the database). The ratios say what the queue adds per job.

The figures are printed and written to benchmarks/RESULTS.md, section "Job queue throughput".
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from results import RESULTS, write_section  # benchmarks/results.py

SECTION = "## Job queue throughput"


class _Ctx:
    """A do-nothing JobContext for the direct calls."""

    job_id = 0
    home = ""

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def log(self, line: str) -> None:
        pass


def _call_noop(i: int) -> dict:
    from sctk.jobs.builtin import noop

    return noop({"echo": i}, _Ctx())


def direct_seconds(jobs: int) -> float:
    """Wall time of JOBS direct calls of the noop kind (the best of three rounds)."""
    from sctk.jobs.builtin import noop

    ctx = _Ctx()
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for i in range(jobs):
            noop({"echo": i}, ctx)
        rounds.append(time.perf_counter() - start)
    return min(rounds)


def bare_pool_seconds(jobs: int, processes: int) -> float:
    """Wall time of JOBS noop calls through a warmed-up 'spawn' pool of PROCESSES."""
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_call_noop, range(processes * 2)))  # start every process first
        start = time.perf_counter()
        futures = [pool.submit(_call_noop, i) for i in range(jobs)]
        for future in futures:
            future.result()
        return time.perf_counter() - start


def _fresh_postgres(url: str) -> tuple[str, callable]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = make_url(url).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"sctk_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(url).set(database=name).render_as_string(hide_password=False), drop


def measure_queue(root: Path, jobs: int, concurrency: int, db_url: str | None) -> dict:
    from sctk import config
    from sctk.jobs import queue
    from sctk.jobs.worker import Worker
    from sctk.ops.init_home import init_home
    from sctk.storage.engine import make_engine, session_scope

    home = root / f"home-{uuid.uuid4().hex[:6]}"
    init_home(home, database_url=db_url)
    overrides = {
        "jobs": {"poll_seconds": 0.05},
        "executor": {"kind": "local", "processes": concurrency},
    }
    settings = config.load(home, overrides).settings
    engine = make_engine(settings)
    try:
        start = time.perf_counter()
        with session_scope(engine) as s:
            for i in range(jobs):
                queue.submit(s, "noop", {"echo": i}, owner="bench")
        submit = time.perf_counter() - start
        with Worker(settings, concurrency=concurrency) as worker:
            worker.executor.warm_up()
            start = time.perf_counter()
            stats = worker.run_until_idle(timeout=3600)
            run = time.perf_counter() - start
        with session_scope(engine) as s:
            counts = queue.counts(s)
        if counts["succeeded"] != jobs or stats["succeeded"] != jobs:
            raise SystemExit(f"not every job succeeded: {counts}, {dict(stats)}")
    finally:
        engine.dispose()
    return {"submit": submit, "run": run}


def report(rows: list[dict], jobs: int, concurrency: int, direct: float, pool: float) -> str:
    direct_us = direct / jobs * 1e6
    pool_ms = pool / jobs * 1e3
    command = f"python benchmarks/bench_jobs.py --jobs {jobs} --concurrency {concurrency}"
    if any(r["name"] == "PostgreSQL" for r in rows):
        command += " --postgres postgresql://postgres@127.0.0.1:5432/test"
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"Python {platform.python_version()}; command: `{command}`.",
        "",
        f"{jobs} `noop` jobs submitted in one transaction, then run by one worker with the "
        f"local executor ({concurrency} 'spawn' processes, warmed up first; concurrency "
        f"{concurrency}) until the queue is idle. Each pass of the worker is one transaction "
        "that records the outcomes of the finished jobs and claims the next ones, writing a "
        "status event per change; after the commit every event is also published on the "
        "message bus (on PostgreSQL a row in `bus_messages` and a NOTIFY, so that other "
        "processes hear of it). 'run' is the wall time of that; 'per job' is run / jobs.",
        "",
        "| database | submit jobs/s | run jobs/s | per job ms | x direct call | x bare pool |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        per_job_ms = r["run"] / jobs * 1e3
        lines.append(
            f"| {r['name']} | {jobs / r['submit']:.0f} | {jobs / r['run']:.0f} | "
            f"{per_job_ms:.2f} | {per_job_ms * 1e3 / direct_us:,.0f} | "
            f"{per_job_ms / pool_ms:.1f} |"
        )
    lines += [
        "",
        f"Peers in the same run: the `noop` function called directly costs {direct_us:.2f} µs "
        f"a call; the same calls through a bare `ProcessPoolExecutor` of {concurrency} "
        f"processes cost {pool_ms:.3f} ms a call ({jobs / pool:.0f} calls/s). The "
        "'x direct call' column is what the queue costs per job over doing the work in "
        "place (a no-op, so the whole cost is overhead); 'x bare pool' is what durability "
        "adds to handing work to processes: claims, outcomes and events in the database. "
        "A job that computes for seconds makes both negligible. A load average above the "
        "number of CPUs means the machine was shared while measuring.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="No-op jobs per database.")
    parser.add_argument(
        "--concurrency", type=int, default=os.cpu_count() or 1, help="Pool size and slots."
    )
    parser.add_argument(
        "--postgres",
        default=os.environ.get("SCTK_TEST_POSTGRES_URL"),
        help="A PostgreSQL server to create a fresh database on (default: "
        "$SCTK_TEST_POSTGRES_URL; none: SQLite only).",
    )
    parser.add_argument("--no-write", action="store_true", help=f"Do not update {RESULTS}.")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("SCTK_") and k != "SCTK_TEST_POSTGRES_URL"]:
        del os.environ[key]  # the figures must not depend on the caller's settings

    direct = direct_seconds(args.jobs)
    pool = bare_pool_seconds(args.jobs, args.concurrency)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sctk-bench-jobs-") as tmp:
        os.environ["XDG_DATA_HOME"] = tmp
        rows.append(
            {"name": "SQLite", **measure_queue(Path(tmp), args.jobs, args.concurrency, None)}
        )
        if args.postgres:
            url, drop = _fresh_postgres(args.postgres)
            try:
                rows.append(
                    {
                        "name": "PostgreSQL",
                        **measure_queue(Path(tmp), args.jobs, args.concurrency, url),
                    }
                )
            finally:
                drop()
    print(f"direct call: {direct / args.jobs * 1e6:.2f} µs/call")
    print(f"bare pool:   {pool / args.jobs * 1e3:.3f} ms/call ({args.jobs / pool:.0f}/s)")
    for r in rows:
        per_job = r["run"] / args.jobs
        print(
            f"{r['name']:>10}: submit {args.jobs / r['submit']:.0f} jobs/s, "
            f"run {args.jobs / r['run']:.0f} jobs/s ({per_job * 1e3:.2f} ms/job, "
            f"x{per_job / (direct / args.jobs):,.0f} a direct call, "
            f"x{per_job / (pool / args.jobs):.1f} the bare pool)"
        )
    if not args.no_write:
        write_section(SECTION, report(rows, args.jobs, args.concurrency, direct, pool))
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.exit(main())
