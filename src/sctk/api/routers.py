"""Every router of the API, in the order of the OpenAPI document, and the pages beside them
(the dashboard, the API's own documentation pages)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from sctk.api import docs_pages
from sctk.api.deps import require
from sctk.api.routes import alerts as alerts_routes
from sctk.api.routes import audit_log, auth, health, keys, meta, tokens, users, ws
from sctk.api.routes import backups as backups_routes
from sctk.api.routes import data as data_routes
from sctk.api.routes import incidents as incidents_routes
from sctk.api.routes import jobs as jobs_routes
from sctk.api.routes import maintenance as maintenance_routes
from sctk.api.routes import metrics as metrics_routes
from sctk.api.routes import models as models_routes
from sctk.api.routes import observations as observations_routes
from sctk.web import routes as web


def include_api(app: FastAPI) -> None:
    app.include_router(health.router)
    app.include_router(ws.router)
    app.include_router(metrics_routes.router)
    v1 = APIRouter(prefix="/api/v1")
    v1.include_router(auth.router)
    v1.include_router(meta.router, dependencies=[require("read")])
    v1.include_router(users.router)
    v1.include_router(tokens.router)
    v1.include_router(keys.router)
    v1.include_router(audit_log.router)
    v1.include_router(jobs_routes.router)
    v1.include_router(data_routes.router)
    # observations first: their operations come before the model's DELETE in the OpenAPI
    # document, the order a client walking it (and the fuzz test) meets them in
    v1.include_router(observations_routes.router)
    v1.include_router(models_routes.router)
    v1.include_router(alerts_routes.router)
    v1.include_router(incidents_routes.router)
    v1.include_router(metrics_routes.api_router)
    v1.include_router(backups_routes.router)
    v1.include_router(maintenance_routes.router)
    app.include_router(v1)


def include_pages(app: FastAPI) -> None:
    web.install(app)  # the dashboard: static pages that call the API above
    docs_pages.install(app)
