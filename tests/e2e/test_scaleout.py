"""The production layout on loopback: PostgreSQL, two API processes behind a real nginx, one
job worker computing on a Dask cluster, one scheduler; every part a process of its own.

It shows what docs/deployment.md promises: jobs submitted through nginx complete, a
WebSocket on either API process (or through nginx) streams the events the worker publishes
(they cross processes on PostgreSQL's LISTEN/NOTIFY), and killing one API process with
SIGKILL in the middle of a load loses no job and fails no request: nginx retries them on
the other process. Job submissions are retried too, because nginx gives each one an
idempotency key that stays the same across its retries: a submission the dying process had
already queued is answered with that job, not queued twice.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sctk import config
from sctk.ops.init_home import init_home
from sctk.ops.scheduler import LEASE as SCHEDULER_LEASE
from sctk.security import users
from sctk.storage import lease
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import Job
from tests.e2e.scaleout_support import (
    Processes,
    access_log,
    clean_env,
    dask_argv,
    fail_timeout,
    sctk_argv,
    start_nginx,
    wait_http,
)
from tests.helpers import free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(300)]

ADMIN = ("scale.admin", "Granite-Pylon-Estuary-604")
LOAD_THREADS = 4
POST_EVERY = 6  # one request in six submits a job, the others list jobs
# The load goes on after the kill until nginx, its fail_timeout over, tries the dead process
# again: that request, too, must be retried on the surviving one.
LOAD_AFTER_KILL_SECONDS = fail_timeout() + 2.0
DASK_THREADS = 8


@dataclass
class Cluster:
    home: Path
    procs: Processes
    nginx_url: str
    nginx_prefix: Path
    api_ports: list[int]
    dask_address: str
    engine: Any
    token: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def cluster(pg_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Every process of the layout started, answering, and logged in as an admin."""
    home = tmp_path / "home"
    init_home(home, database_url=pg_url)
    settings = config.load(home).settings
    engine = make_engine(settings)
    with session_scope(engine) as session:
        users.create(session, ADMIN[0], ADMIN[1], "admin", actor="tests")

    procs = Processes(tmp_path / "logs")
    # not under tmp_path: nginx's workers (nobody, when the test runs as root) must reach it
    prefix = Path(tempfile.mkdtemp(prefix="sctk-nginx-"))
    prefix.chmod(0o755)
    api_ports = [free_port(), free_port()]
    nginx_port, dask_port = free_port(), free_port()
    dask_address = f"tcp://127.0.0.1:{dask_port}"
    env = clean_env(
        SCTK_HOME=str(home),
        SCTK_DATABASE_URL=pg_url,
        # the load below is one user on one address: the per-identity limits are not tested here
        SCTK_SECURITY__RATE_LIMIT_PER_MINUTE="1000000",
        SCTK_SECURITY__CLIENT_RATE_LIMIT_PER_MINUTE="1000000",
        SCTK_JOBS__POLL_SECONDS="0.1",
    )
    try:
        # started together: on two cores, each one's imports take seconds
        procs.start(
            "dask-scheduler",
            dask_argv("scheduler", "--host", "127.0.0.1", "--port", str(dask_port))
            + ["--no-dashboard"],
            clean_env(),
        )
        for n, port in enumerate(api_ports):
            procs.start(
                f"api{n}",
                sctk_argv("serve", "--role", "api", "--host", "127.0.0.1", "--port", str(port)),
                env,
            )
        procs.start(
            "dask-worker",
            dask_argv("worker", dask_address, "--host", "127.0.0.1", "--nworkers", "1")
            + ["--nthreads", str(DASK_THREADS), "--no-dashboard", "--no-nanny"],
            clean_env(),
        )
        procs.start(
            "worker",
            sctk_argv("serve", "--role", "worker"),
            {
                **env,
                "SCTK_EXECUTOR__KIND": "dask",
                "SCTK_EXECUTOR__ADDRESS": dask_address,
                "SCTK_JOBS__CONCURRENCY": str(DASK_THREADS),
            },
        )
        procs.start("scheduler", sctk_argv("serve", "--role", "scheduler"), env)
        start_nginx(procs, prefix, nginx_port, api_ports)
        for n, port in enumerate(api_ports):
            wait_http(f"http://127.0.0.1:{port}/health/live", procs, f"api{n}")
        nginx_url = f"http://127.0.0.1:{nginx_port}"
        wait_http(f"{nginx_url}/health/live", procs, "nginx", timeout=20)
        c = Cluster(home, procs, nginx_url, prefix, api_ports, dask_address, engine)
        login = httpx.post(
            f"{nginx_url}/api/v1/auth/token",
            json={"username": ADMIN[0], "password": ADMIN[1]},
            timeout=30,
        )
        assert login.status_code == 200, login.text
        c.token = login.json()["access_token"]
        c.headers = {"Authorization": f"Bearer {c.token}"}
        yield c
    finally:
        procs.close(last=("dask-worker", "dask-scheduler"))  # the worker is their client
        engine.dispose()
        for log in ("access.log", "error.log"):  # kept with the others for a post-mortem
            with contextlib.suppress(OSError):
                shutil.copy(prefix / log, procs.logdir / f"nginx-{log}")
        shutil.rmtree(prefix, ignore_errors=True)


def submit(client: httpx.Client, kind: str, params: dict[str, Any]) -> httpx.Response:
    return client.post("/api/v1/jobs", json={"kind": kind, "params": params})


def statuses(engine, ids: list[int]) -> dict[int, str]:
    with session_scope(engine) as session:
        return dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(ids))).all())


def wait_succeeded(cluster: Cluster, ids: list[int], timeout: float) -> None:
    """Poll until every job of IDS has succeeded; fail at once when one ends otherwise or a
    process it needs has exited."""

    def done() -> str | bool:
        for name in ("worker", "dask-worker", "dask-scheduler"):
            if cluster.procs.procs[name].poll() is not None:
                return f"{name} exited:\n{cluster.procs.log(name)}"
        found = statuses(cluster.engine, ids)
        bad = {i: s for i, s in found.items() if s in ("failed", "dead", "cancelled")}
        if bad:
            return f"jobs ended badly: {bad}"
        return len(found) == len(ids) and set(found.values()) == {"succeeded"}

    try:
        outcome = wait_until(done, timeout=timeout, interval=0.25, what=f"{len(ids)} jobs")
    except AssertionError as exc:
        left = {i: s for i, s in statuses(cluster.engine, ids).items() if s != "succeeded"}
        worker_log = cluster.procs.log("worker")
        raise AssertionError(f"{exc}; not succeeded: {left}\n{worker_log}") from None
    assert outcome is True, outcome


def watch(url: str, into: list[dict[str, Any]], opened: list[float], errors: list[str]) -> None:
    """Collect a job's WebSocket messages until the server closes the stream."""
    try:
        with connect(url, open_timeout=30, close_timeout=5) as ws:
            opened.append(time.time())
            while True:
                into.append(json.loads(ws.recv(timeout=60)))
    except ConnectionClosed as exc:
        if exc.rcvd is None or exc.rcvd.code != 1000:
            errors.append(f"{url.split('?')[0]} closed with {exc.rcvd}")
    except Exception as exc:  # reported by the test
        errors.append(f"{url.split('?')[0]}: {type(exc).__name__}: {exc}")


def dask_tasks_run(address: str) -> int:
    """How many sctk job tries the Dask scheduler has been given."""
    from dask.distributed import Client

    def count(dask_scheduler) -> int:
        prefix = dask_scheduler.task_prefixes.get("sctk-job")
        return 0 if prefix is None else sum(prefix.state_counts.values())

    with Client(address, timeout=30) as client:
        return client.run_on_scheduler(count)


@dataclass
class Outcome:
    """One request of the load: sent at SENT, answered (or failed) at AT (time.time())."""

    method: str
    sent: float
    at: float
    status: int | None
    detail: str = ""
    echo: str = ""
    job_id: int | None = None


def load(cluster: Cluster, n: int, stop: threading.Event, out: list[Outcome]) -> None:
    """POST and GET /api/v1/jobs through nginx until STOP is set."""
    with httpx.Client(base_url=cluster.nginx_url, headers=cluster.headers, timeout=30) as client:
        i = 0
        while not stop.is_set():
            i += 1
            method, echo = ("POST", f"load-{n}-{i}") if i % POST_EVERY == 1 else ("GET", "")
            sent = time.time()
            try:
                if method == "POST":
                    r = submit(client, "noop", {"echo": echo})
                else:
                    r = client.get("/api/v1/jobs", params={"limit": 20})
            except httpx.HTTPError as exc:
                out.append(Outcome(method, sent, time.time(), None, repr(exc), echo))
                continue
            # a POST that nginx retried after the dying process had queued its job is
            # answered 200 with that job (the idempotency key it gave the request)
            replayed = r.status_code == 200 and r.headers.get("idempotent-replayed") == "true"
            ok = (r.status_code == 201 or replayed) if method == "POST" else r.status_code == 200
            job_id = r.json()["id"] if ok and method == "POST" else None
            detail = "" if ok else r.text[:200]
            out.append(Outcome(method, sent, time.time(), r.status_code, detail, echo, job_id))


def test_two_apis_behind_nginx_a_dask_worker_and_a_scheduler(cluster: Cluster):
    started = time.monotonic()
    api = httpx.Client(base_url=cluster.nginx_url, headers=cluster.headers, timeout=30)

    # 1. a job through nginx; a WebSocket straight to EACH API process (and one through
    # nginx's /ws/ location) streams its events, which the worker and the Dask process
    # running the job publish on the PostgreSQL bus
    r = submit(api, "sleep", {"seconds": 2.0, "steps": 4})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    query = f"/ws/jobs/{job_id}?token={cluster.token}"
    urls = [f"ws://127.0.0.1:{port}{query}" for port in cluster.api_ports]
    urls.append(cluster.nginx_url.replace("http://", "ws://") + query)
    streams: list[list[dict[str, Any]]] = [[] for _ in urls]
    opened: list[float] = []
    errors: list[str] = []
    watchers = [
        threading.Thread(target=watch, args=(url, got, opened, errors))
        for url, got in zip(urls, streams, strict=True)
    ]
    for t in watchers:
        t.start()
    for t in watchers:
        t.join(timeout=120)
    assert not errors, errors
    for got in streams:
        *evts, final = got
        assert final == {"job_id": job_id, "final": True, "status": "succeeded"}
        assert [e["seq"] for e in evts] == list(range(1, len(evts) + 1))  # each once, in order
        assert [e["data"]["status"] for e in evts if e["kind"] == "status"] == [
            "queued",
            "running",
            "succeeded",
        ]
        assert [e["data"]["fraction"] for e in evts if e["kind"] == "progress"] == [
            0.25,
            0.5,
            0.75,
            1.0,
        ]
    assert streams[0] == streams[1] == streams[2]
    # the streams were open while the job ran: what came after was heard live, not replayed
    with session_scope(cluster.engine) as session:
        finished = session.get(Job, job_id).finished_at.timestamp()
    assert len(opened) == len(urls) and max(opened) < finished, (opened, finished)
    assert dask_tasks_run(cluster.dask_address) >= 1, "the job did not run on the Dask cluster"
    ws_done = time.monotonic()

    # 2. a bounded load through nginx; one API process is killed with SIGKILL in the middle
    outcomes: list[list[Outcome]] = [[] for _ in range(LOAD_THREADS)]
    stop = threading.Event()
    threads = [
        threading.Thread(target=load, args=(cluster, n, stop, outcomes[n]))
        for n in range(LOAD_THREADS)
    ]
    victim, survivor = (f"127.0.0.1:{p}" for p in cluster.api_ports)
    for t in threads:
        t.start()
    try:
        # kill once both processes are serving the load, not at some guessed moment
        wait_until(
            lambda: (
                {victim, survivor}
                <= {
                    line.split('up="')[1].split('"')[0] for line in access_log(cluster.nginx_prefix)
                }
                and all(len(o) >= 5 for o in outcomes)
            ),
            timeout=60,
            what="the load to reach both API processes",
        )
        before_kill = len(access_log(cluster.nginx_prefix))
        cluster.procs.kill9("api0")
        killed_at = time.time()  # it is dead and reaped: its sockets are closed
        stop.wait(LOAD_AFTER_KILL_SECONDS)  # the load goes on meanwhile: this is its length
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    load_done = time.monotonic()
    everything = [o for per_thread in outcomes for o in per_thread]
    after_kill = [o for o in everything if o.sent > killed_at]
    assert len(after_kill) >= 20, f"only {len(after_kill)} requests after the kill"
    lines = access_log(cluster.nginx_prefix)[before_kill:]

    # No request failed: nginx retried them on the other process, job submissions included
    # (they carry an idempotency key, so a submission the killed process had already queued
    # is answered with that job rather than queued again)
    failed = [o for o in everything if o.detail]
    assert not failed, f"{len(failed)} of {len(everything)} failed: {failed[:5]}"

    # nginx saw the dead process and sent the requests it could not serve to the other one
    retried = [line for line in lines if f'up="{victim}, {survivor}"' in line]
    assert retried, "no request was retried on the surviving process:\n" + "\n".join(lines[:20])
    assert all(line.split(" up=")[0].endswith((" 200", " 201")) for line in retried), retried
    # among them the one that tried the dead process again once its fail_timeout was over
    probe_after = killed_at + fail_timeout() - 0.5
    assert any(float(line.rsplit("at=", 1)[1]) > probe_after for line in retried), retried

    # 3. no job lost, none doubled: every 201 is one job, every other job is one of the POSTs
    # cut off by the kill (queued once at most), and every one of them succeeds
    by_echo: dict[str, list[int]] = {}
    with session_scope(cluster.engine) as session:
        for jid, params in session.execute(select(Job.id, Job.params).where(Job.kind == "noop")):
            by_echo.setdefault(params["echo"], []).append(jid)
    created = {o.echo: o.job_id for o in everything if o.job_id is not None}
    assert len(created) >= 10
    assert {echo: by_echo.get(echo) for echo in created} == {e: [j] for e, j in created.items()}
    cut_off = {o.echo for o in failed}
    assert set(by_echo) <= set(created) | cut_off, "a job nobody submitted"
    assert all(len(by_echo.get(echo, [])) <= 1 for echo in cut_off), "a job queued twice"
    ids = [jid for jids in by_echo.values() for jid in jids]
    wait_succeeded(cluster, ids, timeout=90)
    assert dask_tasks_run(cluster.dask_address) >= len(ids) + 1
    jobs_done = time.monotonic()

    # the scheduler holds its lease and all that was not killed still runs
    with session_scope(cluster.engine) as session:
        assert lease.current(session, SCHEDULER_LEASE) is not None
    for name in ("api1", "worker", "scheduler", "nginx", "dask-scheduler", "dask-worker"):
        assert cluster.procs.alive(name)
    api.close()
    print(
        f"\nscale-out: websocket job {ws_done - started:.1f} s; load {load_done - ws_done:.1f} s: "
        f"{len(everything)} requests, {len(after_kill)} sent after the kill, {len(retried)} "
        f"retried by nginx, {len(failed)} POSTs cut off in the killed process "
        f"({sum(e in by_echo for e in cut_off)} of them queued); {len(ids)} jobs, all "
        f"succeeded {jobs_done - load_done:.1f} s after the load"
    )


def test_a_prediction_in_flight_on_a_killed_api_process_is_retried_by_nginx(tmp_path: Path):
    """Two API processes behind the shipped nginx; a prediction is held inside the physics of
    whichever process nginx gave it to, which is then killed with SIGKILL: nginx sends the
    prediction again to the other process, and the client sees a 200."""
    import numpy as np
    import pandas as pd

    from sctk.uq.jobs import train
    from tests.uq.physics_examples import HOLD_FILE_ENV
    from tests.uq.registry_helpers import TINY, import_csv

    home = tmp_path / "home"
    init_home(home)
    settings = config.load(home).settings
    rng = np.random.default_rng(0)
    a = rng.uniform(-2, 2, 80)
    import_csv(settings, pd.DataFrame({"a": a, "y": np.sin(a)}), "runs")
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            users.create(s, ADMIN[0], ADMIN[1], "admin", actor="tests")
            config_ = {**TINY, "physics": "tests.uq.physics_examples:hold_first_caller"}
            params = {"dataset": "runs", "target": "y", "features": ["a"], "config": config_}
            model_id = train(s, home, {**params, "name": "held"})["model"]["id"]
    finally:
        engine.dispose()

    hold = tmp_path / "held-by.pid"
    procs = Processes(tmp_path / "logs")
    prefix = Path(tempfile.mkdtemp(prefix="sctk-nginx-"))
    prefix.chmod(0o755)
    api_ports, nginx_port = [free_port(), free_port()], free_port()
    env = clean_env(
        SCTK_HOME=str(home),
        # the served processes load the model: its physics must be one the admin lists
        SCTK_UQ__PHYSICS_ALLOWED='["tests.uq.physics_examples:hold_first_caller"]',
        **{HOLD_FILE_ENV: str(hold)},
    )
    try:
        for n, port in enumerate(api_ports):
            argv = sctk_argv("serve", "--role", "api", "--host", "127.0.0.1", "--port", str(port))
            procs.start(f"api{n}", argv, env)
        start_nginx(procs, prefix, nginx_port, api_ports)
        for n, port in enumerate(api_ports):
            wait_http(f"http://127.0.0.1:{port}/health/live", procs, f"api{n}")
        url = f"http://127.0.0.1:{nginx_port}"
        wait_http(f"{url}/health/live", procs, "nginx", timeout=20)
        token = httpx.post(
            f"{url}/api/v1/auth/token",
            json={"username": ADMIN[0], "password": ADMIN[1]},
            timeout=30,
        ).json()["access_token"]

        answers: list[httpx.Response] = []

        def ask() -> None:
            answers.append(
                httpx.post(
                    f"{url}/api/v1/models/{model_id}/predict",
                    json={"rows": [{"a": 0.5}, {"a": 1.0}], "alpha": 0.1},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=120,
                )
            )

        asking = threading.Thread(target=ask)
        asking.start()
        wait_until(
            lambda: hold.exists() and hold.read_text().isdigit(), timeout=60, what="the hold"
        )
        holder = int(hold.read_text())
        (name,) = [n for n, p in procs.procs.items() if p.pid == holder]
        procs.kill9(name)  # the process answering the prediction dies in the middle of it
        asking.join(timeout=120)
        (answer,) = answers
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["mean"]) == 2
        # nginx writes its access line in the log phase, after the client has its answer
        (line,) = wait_until(
            lambda: [x for x in access_log(prefix) if "/predict" in x],
            timeout=10,
            what="the prediction's line in nginx's access log",
        )
        assert line.startswith("POST /api/v1/models/") and " 200 " in line
        assert f"127.0.0.1:{api_ports[int(name[-1])]}, " in line  # tried there first, then again
    finally:
        procs.close()
        shutil.rmtree(prefix, ignore_errors=True)
