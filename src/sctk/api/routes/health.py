"""/health/live and /health/ready: for load balancers and orchestrators; no authentication."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sctk.api.errors import problem
from sctk.health.registry import run_checks_within

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", summary="The process answers (no I/O).")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Every health check passes; 503 problem+json naming the failing checks otherwise.",
    responses={503: {"description": "Not ready", "content": {"application/problem+json": {}}}},
)
def ready(request: Request) -> JSONResponse:
    settings = request.app.state.settings
    db = settings.database
    # a stalled database answers a ping (timeout_seconds) or a new connection
    # (connect_timeout) in bounded time; the probe answers a little after both at most
    within = db.timeout_seconds + db.connect_timeout + 0.5
    report = run_checks_within(settings, request.app.state.engine, within)
    body = report.as_dict()
    if report.failing:
        names = ", ".join(f"{o.name} ({o.message})" for o in report.failing)
        return problem(
            503,
            f"Not ready; failing checks: {names}.",
            title="Service not ready",
            **{k: v for k, v in body.items() if k != "status"},
            health=body["status"],
        )
    return JSONResponse(body)
