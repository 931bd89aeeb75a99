"""WebSocket /ws/jobs/{id}: a job's events, each exactly once and in order, until it ends.

Authentication: browsers cannot set headers on a WebSocket, so the bearer credential is
taken from the `Authorization` header, else from a `bearer.<token>` subprotocol, else from a
`token` query parameter (the least good: URLs end up in logs, so uvicorn's log line is
redacted below). A client offering the subprotocol `sctk` beside `bearer.<token>` gets
`sctk` selected; otherwise the bearer one is echoed, since browsers drop a connection whose
server selects none of the protocols they offered. Refusals are close codes after the
handshake (a refusal before it is only an HTTP 403 to the client): 4401 no or bad
credential, 4403 no 'read' permission, 4404 unknown job, 4429 too many requests.

Messages are `events.as_dict(event)` JSON objects; the last one is
`{"job_id": ID, "final": true, "status": STATUS}` once the job has reached a terminal status,
and the server then closes with 1000.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from asyncio import FIRST_COMPLETED
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sctk.api.deps import authenticate, record_denial
from sctk.bus import Envelope
from sctk.jobs import events
from sctk.security.auth_errors import AuthenticationFailed
from sctk.security.roles import allowed
from sctk.storage.models import Job

router = APIRouter()

PERMISSION = "read"
PROTOCOL = "sctk"
BEARER_PROTOCOL = "bearer."
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429
STATUS_POLL_SECONDS = 1.0  # a job may end without a status event: look at its row this often
MAX_JOB_ID = 2**31 - 1  # the width of jobs.id on PostgreSQL
_MAX_REASON_BYTES = 123  # RFC 6455: a close frame's reason fits in 123 bytes


class _RedactTokens(logging.Filter):
    """uvicorn logs a WebSocket's path with its query string: hide a `token=` value."""

    _TOKEN = re.compile(r"([?&]token=)[^&\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "token=" in a for a in record.args
        ):
            record.args = tuple(
                self._TOKEN.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


logging.getLogger("uvicorn.error").addFilter(_RedactTokens())


def _credential(ws: WebSocket) -> tuple[str | None, str, str | None]:
    """(credential or None, why there is none, the subprotocol to select)."""
    offered = list(ws.scope.get("subprotocols") or [])
    chosen = PROTOCOL if PROTOCOL in offered else None
    header = ws.headers.get("authorization")
    if header:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential or " " in credential:
            return None, "The Authorization header must be 'Bearer <token>'.", chosen
        return credential, "", chosen
    for protocol in offered:
        if protocol.startswith(BEARER_PROTOCOL) and len(protocol) > len(BEARER_PROTOCOL):
            return protocol[len(BEARER_PROTOCOL) :], "", chosen or protocol
    token = ws.query_params.get("token")
    if token:
        return token, "", chosen
    return (
        None,
        "Authentication required: send 'Authorization: Bearer <token>', the subprotocol "
        "'bearer.<token>' or ?token=<token>.",
        chosen,
    )


async def _refuse(ws: WebSocket, code: int, reason: str, subprotocol: str | None) -> None:
    await ws.accept(subprotocol)
    cut = reason.encode("utf-8")[:_MAX_REASON_BYTES].decode("utf-8", "ignore")
    await ws.close(code, cut)


def _load(
    factory: sessionmaker[Session], job_id: int, after_seq: int | None
) -> tuple[str | None, list[dict[str, Any]]]:
    """(the job's status or None if there is no such job, its events after AFTER_SEQ)."""
    with factory() as session:
        status = session.scalar(select(Job.status).where(Job.id == job_id))
        if status is None or after_seq is None:
            return status, []
        return status, [events.as_dict(e) for e in events.history(session, job_id, after_seq)]


@router.websocket("/ws/jobs/{job_id}")
async def job_events(websocket: WebSocket, job_id: str) -> None:
    """Stream a job's stored and live events, then a final message when the job ends."""
    app = websocket.app
    credential, problem, subprotocol = _credential(websocket)
    principal = None
    if credential:
        try:
            principal = await authenticate(websocket, credential)
        except AuthenticationFailed as exc:
            problem = exc.message
    if principal is None:
        await _refuse(websocket, CLOSE_UNAUTHORIZED, problem, subprotocol)
        return
    if app.state.identity_limiter.hit(f"user:{principal.id}"):
        await _refuse(websocket, CLOSE_TOO_MANY, "Too many requests for this account.", subprotocol)
        return
    if not allowed(principal.role, PERMISSION):
        await run_in_threadpool(record_denial, websocket, principal, PERMISSION, "WEBSOCKET")
        reason = f"Your role '{principal.role}' may not do this; it needs '{PERMISSION}'."
        await _refuse(websocket, CLOSE_FORBIDDEN, reason, subprotocol)
        return
    jid = int(job_id) if job_id.isdigit() and len(job_id) <= 10 else None
    status = None
    if jid is not None and jid <= MAX_JOB_ID:
        status, _ = await run_in_threadpool(_load, app.state.sessionmaker, jid, None)
    if status is None:
        await _refuse(websocket, CLOSE_NOT_FOUND, f"No job {job_id[:40]}.", subprotocol)
        return
    await websocket.accept(subprotocol)
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        # OSError, RuntimeError: a send after the client went away (uvicorn, starlette)
        await _stream(websocket, jid)


async def _stream(ws: WebSocket, job_id: int) -> None:
    loop = asyncio.get_running_loop()
    # Live events wait in a list, and an Event only says "look": a wake-up that is missed or
    # doubled loses nothing (a Queue.get() cancelled at the wrong moment could lose an item).
    buffer: list[dict[str, Any]] = []
    wakeup = asyncio.Event()

    def push(payload: dict[str, Any]) -> None:  # on the loop
        buffer.append(payload)
        wakeup.set()

    def on_event(envelope: Envelope) -> None:  # on the bus thread
        if envelope.payload.get("job_id") == job_id:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
                loop.call_soon_threadsafe(push, envelope.payload)

    factory = ws.app.state.sessionmaker
    # Subscribe before reading the history: an event committed in between is then in the
    # buffer as well as (perhaps) in the history, and seq tells the two apart.
    sub = ws.app.state.bus.subscribe(
        events.BUS_TYPE, on_event, f"ws.jobs.{job_id}.{uuid.uuid4().hex[:12]}"
    )
    gone = asyncio.ensure_future(_until_disconnect(ws))
    last = 0

    async def send_from_db() -> str | None:
        nonlocal last
        status, stored = await run_in_threadpool(_load, factory, job_id, last)
        for event in stored:
            await ws.send_json(event)
            last = event["seq"]
        return status

    try:
        status = await send_from_db()
        while status not in events.TERMINAL_STATUSES:
            if status is None:  # the job was deleted while we watched it
                await ws.close(CLOSE_NOT_FOUND, f"No job {job_id}.")
                return
            timed_out = False
            if not buffer:
                waiter = asyncio.ensure_future(wakeup.wait())
                done, _ = await asyncio.wait(
                    {waiter, gone}, timeout=STATUS_POLL_SECONDS, return_when=FIRST_COMPLETED
                )
                waiter.cancel()
                if gone in done:
                    return
                timed_out = not done
            wakeup.clear()
            fresh = {e["seq"]: e for e in buffer if e["seq"] > last}  # seq: once each
            buffer.clear()
            seqs = sorted(fresh)
            if not fresh:
                if timed_out:  # nothing for a while: has the job ended without an event?
                    status = await send_from_db()
            elif seqs == list(range(last + 1, last + 1 + len(seqs))) and not any(
                fresh[q]["kind"] == "status" for q in seqs
            ):
                for q in seqs:
                    await ws.send_json(fresh[q])
                    last = q
            else:
                # a gap (an event still on its way, or lost) or a status change: the database
                # has every committed event in order, and the job's status with them
                status = await send_from_db()
        await send_from_db()  # events committed just before the job ended
        await ws.send_json({"job_id": job_id, "final": True, "status": status})
        await ws.close(1000, "The job has finished.")
    finally:
        sub.cancel()
        gone.cancel()


async def _until_disconnect(ws: WebSocket) -> None:
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass  # what a client sends is ignored
