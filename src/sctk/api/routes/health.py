"""/health/live and /health/ready: for load balancers and orchestrators; no authentication."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sctk.api.errors import problem
from sctk.health import run_checks

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
    report = run_checks(request.app.state.settings, engine=request.app.state.engine)
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
