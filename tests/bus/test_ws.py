"""WebSocket /ws/jobs/{id} against a real server: history then live events, each exactly
once and in seq order, a final message when the job ends; refusals as close codes."""

from __future__ import annotations

import json
import logging
import threading

import pytest
from sqlalchemy import update
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from sctk.api.routes import ws as ws_route
from sctk.bus import get_bus
from sctk.jobs import events
from sctk.security import audit_log
from sctk.storage.engine import session_scope
from sctk.storage.models import Job, User
from tests.bus.conftest import python
from tests.helpers import wait_until
from tests.security.conftest import ACCOUNTS, create_token

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])

RECORDER = """
import sys
from pathlib import Path
from sctk import config
from sctk.api.routes import ws as ws_route
from sctk.bus import get_bus
from sctk.jobs import events
from sctk.storage.engine import make_engine, session_scope
settings = config.load(Path(sys.argv[1])).settings
engine = make_engine(settings)
for i in range(int(sys.argv[3])):
    with session_scope(engine) as session:
        events.record(session, int(sys.argv[2]), "log", {"line": f"from a worker {i}"})
"""


def ws_url(api, job_id, query: str = "") -> str:
    return api.url.replace("http://", "ws://") + f"/ws/jobs/{job_id}" + query


def new_job(engine) -> int:
    with session_scope(engine) as session:
        job = Job(kind="sleep", params={"seconds": 1}, status="running")
        session.add(job)
        session.flush()
        return job.id


def record(engine, job_id: int, kind: str = "progress", **data) -> None:
    with session_scope(engine) as session:
        events.record(session, job_id, kind, data)


def receive(ws, count: int) -> list[dict]:
    return [json.loads(ws.recv(timeout=20)) for _ in range(count)]


def until_closed(ws) -> tuple[list[dict], int | None, str]:
    got = []
    try:
        while True:
            got.append(json.loads(ws.recv(timeout=20)))
    except ConnectionClosed as exc:
        return got, exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""


def test_history_then_live_events_exactly_once_in_order(viewer_api, backend, home, monkeypatch):
    # The stream also re-reads the database now and then (a job may end without an event);
    # pushed far out here, so that every live event must have come over the bus.
    monkeypatch.setattr(ws_route, "STATUS_POLL_SECONDS", 60.0)
    api = viewer_api
    from_worker = []  # job events this process's bus received from another process
    bus = get_bus(api.settings)
    bus.subscribe(
        "job.event", lambda e: from_worker.append(e) if e.source != bus.source else None, "t"
    )
    job_id = new_job(api.engine)
    for i in range(3):
        record(api.engine, job_id, fraction=i / 10)
    # events keep being recorded while the client connects: some are in the history, some
    # arrive live, some both; the client must see each once
    racing = threading.Thread(
        target=lambda: [record(api.engine, job_id, "log", line=f"race {i}") for i in range(15)]
    )
    with connect(
        ws_url(api, job_id), subprotocols=["sctk", f"bearer.{api.jwt('viewer')}"], open_timeout=20
    ) as ws:
        assert ws.subprotocol == "sctk"
        racing.start()
        first = receive(ws, 3)
        assert [e["seq"] for e in first] == [1, 2, 3] and first[0]["data"] == {"fraction": 0.0}
        racing.join()
        record(api.engine, job_id, "log", line="after the race")
        expected = 3 + 15 + 1
        if backend == "postgres":  # a worker in another process, reaching us through NOTIFY
            python(RECORDER, str(home), str(job_id), "3", env={"SCTK_HOME": str(home)})
            expected += 3
        live = receive(ws, expected - 3)
        with session_scope(api.engine) as session:
            events.record(session, job_id, "status", {"status": "succeeded"})
            session.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
        rest, code, reason = until_closed(ws)
    got = first + live + rest
    assert [e.get("seq") for e in got[:-1]] == list(range(1, expected + 2))
    assert got[-1] == {"job_id": job_id, "final": True, "status": "succeeded"}
    assert (code, reason) == (1000, "The job has finished.")
    assert all(e["job_id"] == job_id for e in got)
    if backend == "postgres":
        lines = [f"from a worker {i}" for i in range(3)]
        assert [e["data"]["line"] for e in got[:-1] if "worker" in str(e["data"])] == lines
        assert [e.payload["data"]["line"] for e in from_worker] == lines


@sqlite_only
def test_a_finished_job_sends_its_history_and_closes(viewer_api, caplog):
    caplog.set_level(logging.INFO, logger="uvicorn.error")
    api = viewer_api
    job_id = new_job(api.engine)
    record(api.engine, job_id, fraction=1.0)
    with session_scope(api.engine) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="failed"))
    token = api.jwt("viewer")
    with connect(ws_url(api, job_id, f"?token={token}"), open_timeout=20) as ws:
        got, code, _ = until_closed(ws)
    assert [e.get("seq") for e in got] == [1, None] and got[-1]["status"] == "failed"
    assert code == 1000
    # the server's log line names the URL, but not the credential in it
    assert f"/ws/jobs/{job_id}?token=[redacted]" in caplog.text
    assert token not in caplog.text


@sqlite_only
def test_a_job_that_ends_without_an_event_still_closes_the_stream(viewer_api):
    api = viewer_api
    job_id = new_job(api.engine)
    bus = get_bus(api.settings)
    headers = {"Authorization": f"Bearer {api.jwt('viewer')}"}
    with connect(ws_url(api, job_id), additional_headers=headers, open_timeout=20) as ws:
        wait_until(lambda: any(n.startswith(f"ws.jobs.{job_id}.") for n in bus.subscriber_names()))
        with session_scope(api.engine) as session:
            session.execute(update(Job).where(Job.id == job_id).values(status="cancelled"))
        got, code, _ = until_closed(ws)
    assert got == [{"job_id": job_id, "final": True, "status": "cancelled"}] and code == 1000
    # the stream's subscription ends with it
    wait_until(lambda: not any(n.startswith("ws.jobs.") for n in bus.subscriber_names()))


@sqlite_only
def test_a_client_that_leaves_ends_its_subscription(viewer_api):
    api = viewer_api
    job_id = new_job(api.engine)
    bus = get_bus(api.settings)
    with connect(ws_url(api, job_id, f"?token={api.jwt('viewer')}"), open_timeout=20):
        wait_until(lambda: any(n.startswith("ws.jobs.") for n in bus.subscriber_names()))
    wait_until(
        lambda: not any(n.startswith("ws.jobs.") for n in bus.subscriber_names()),
        what="the subscription to end",
    )
    record(api.engine, job_id, fraction=0.5)  # nobody listens: nothing fails, nothing kept
    assert bus.drain(10) and bus.stats["dead_lettered"] == 0


@sqlite_only
def test_refusals_are_close_codes(viewer_api):
    api = viewer_api
    job_id = new_job(api.engine)
    token = api.jwt("viewer")

    def refused(url: str, **kwargs) -> tuple[int, str]:
        with connect(url, open_timeout=20, **kwargs) as ws:
            got, code, reason = until_closed(ws)
        assert got == []
        return code, reason

    assert refused(ws_url(api, job_id)) == (
        4401,
        "Authentication required: send 'Authorization: Bearer <token>', the subprotocol "
        "'bearer.<token>' or ?token=<token>.",
    )
    assert refused(ws_url(api, job_id, "?token=forged")) == (4401, "The access token is not valid.")
    assert refused(ws_url(api, job_id), additional_headers={"Authorization": "Basic x"}) == (
        4401,
        "The Authorization header must be 'Bearer <token>'.",
    )
    bearer = {"Authorization": f"Bearer {token}"}
    assert refused(ws_url(api, 999_999), additional_headers=bearer) == (4404, "No job 999999.")
    assert refused(ws_url(api, "abc"), additional_headers=bearer) == (4404, "No job abc.")

    # a role that holds no permission at all (a role name no longer known)
    plaintext, _ = create_token(api.engine, ACCOUNTS["viewer"].username)
    with session_scope(api.engine) as session:
        session.execute(update(User).values(role="retired-role"))
    code, reason = refused(ws_url(api, job_id), subprotocols=[f"bearer.{plaintext}"])
    assert (code, reason) == (4403, "Your role 'retired-role' may not do this; it needs 'read'.")
    with session_scope(api.engine) as session:
        [denied] = audit_log.entries(session, event="permission.denied")
    assert denied.details["method"] == "WEBSOCKET" and denied.details["path"].endswith(
        f"/ws/jobs/{job_id}"
    )
