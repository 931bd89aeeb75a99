"""/health/live and /health/ready: for load balancers and orchestrators; no authentication.

An anonymous /health/ready names each check and its status only: the messages and values
hold paths, addresses and process ids that are nobody's business outside. A caller with a
valid bearer credential gets the full report.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from sctk.api.deps import authenticate
from sctk.api.errors import problem
from sctk.errors import DatabaseUnavailable
from sctk.health.registry import run_checks_within
from sctk.security.auth_errors import AuthenticationFailed

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="The process answers (no I/O).")
async def live() -> dict[str, str]:
    return {"status": "ok"}


async def _signed_in(request: Request) -> bool:
    """Whether the request carries a valid bearer credential (never an error: a probe with a
    stale token is still answered, with the anonymous report)."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return False
    try:
        await authenticate(request, credential.strip())
    except (AuthenticationFailed, SQLAlchemyError, DatabaseUnavailable):
        return False
    return True


def _anonymous(body: dict[str, Any]) -> dict[str, Any]:
    return {
        **body,
        "checks": [{"name": c["name"], "status": c["status"]} for c in body["checks"]],
    }


@router.get(
    "/ready",
    summary="Every health check passes; 503 problem+json naming the failing checks otherwise. "
    "Check messages and values only with a bearer credential.",
    responses={503: {"description": "Not ready", "content": {"application/problem+json": {}}}},
)
async def ready(request: Request) -> JSONResponse:
    full = await _signed_in(request)
    settings = request.app.state.settings
    db = settings.database
    # a stalled database answers a ping (timeout_seconds) or a new connection
    # (connect_timeout) in bounded time; the probe answers a little after both at most
    within = db.timeout_seconds + db.connect_timeout + 0.5
    report = await run_in_threadpool(run_checks_within, request.app.state.runtime, within)
    body = report.as_dict() if full else _anonymous(report.as_dict())
    if report.failing:
        names = ", ".join(f"{o.name} ({o.message})" if full else o.name for o in report.failing)
        return problem(
            503,
            f"Not ready; failing checks: {names}.",
            title="Service not ready",
            **{k: v for k, v in body.items() if k != "status"},
            health=body["status"],
        )
    return JSONResponse(body)
