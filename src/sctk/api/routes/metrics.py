"""/metrics (Prometheus text) and /api/v1/metrics/{current,history,summary} (JSON).

All need the `read` permission: a viewer account, or (for a Prometheus scraper) a personal
API token of such an account sent as `Authorization: Bearer <token>` (Prometheus's
`authorization` scrape setting).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST

from sctk.api.deps import SessionDep, require
from sctk.monitoring import service

router = APIRouter(tags=["metrics"])  # served at the root: /metrics
api_router = APIRouter(prefix="/metrics", tags=["metrics"])  # under /api/v1


def _collector(request: Request):
    return getattr(request.app.state, "collector", None)


@router.get(
    "/metrics",
    summary="Prometheus exposition of the system and application metrics.",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def prometheus(request: Request, _user=require("read")) -> Response:
    # scraping reads the database: off the event loop
    body = await run_in_threadpool(request.app.state.app_metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@api_router.get("/current", summary="The newest value of every system metric.")
def current(request: Request, _user=require("read")) -> dict[str, Any]:
    return service.current(request.app.state.settings, _collector(request))


@api_router.get(
    "/history",
    summary="One metric over the last hours: raw samples when recent, else 1-minute aggregates.",
)
def history(
    request: Request,
    session: SessionDep,
    _user=require("read"),
    metric: str = Query(..., max_length=200, description="A metric name, e.g. cpu_percent."),
    hours: float = Query(1.0, description="How far back, in hours (at most the retention)."),
) -> dict[str, Any]:
    return service.history(request.app.state.settings, session, metric, hours, _collector(request))


@api_router.get(
    "/summary",
    summary="Per metric over the last hours: current, average, maximum, minimum, points.",
)
def summary(
    request: Request,
    session: SessionDep,
    _user=require("read"),
    hours: float = Query(24.0, description="How far back, in hours (at most the retention)."),
) -> dict[str, Any]:
    return service.summary(request.app.state.settings, session, hours, _collector(request))
