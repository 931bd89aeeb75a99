"""The FastAPI application factory: one runtime, the app's state, its error handlers,
middleware and routers, and the loops it runs while it lives (sctk.api.lifecycle)."""

from __future__ import annotations

import os

from fastapi import FastAPI

from sctk import __version__, config, logs
from sctk.api import app_state, errors, middleware_stack, routers
from sctk.api.lifecycle import SERVE_URL_ENV, AppLoops
from sctk.config import Settings
from sctk.runtime import Runtime

__all__ = ["ROLE_ENV", "SERVE_URL_ENV", "create_app", "served_app"]


def create_app(
    settings: Settings | None = None,
    workers: int | None = 0,
    collect: bool | None = None,
    schedule: bool | None = None,
    warm: bool = False,
    announce: str | None = None,
) -> FastAPI:
    """Build the app for SETTINGS (default: loaded from SCTK_HOME and the environment).

    WORKERS job worker loops run in the process while the app does (None: jobs.workers);
    by default none, so that building an app stays cheap; `sctk serve` asks for them.
    COLLECT runs the metrics collector while the app does (None: only in the served app,
    the one asking for jobs.workers loops). SCHEDULE runs the maintenance scheduler and the
    alerting on the collected metrics (None: in the served app, unless
    maintenance.scheduler_in_serve is off). WARM imports the UQ engine and freezes the garbage
    collector's view of the process at start (sctk.api.warmup): for served processes only,
    as the freeze is process-wide. ANNOUNCE (the role of a served process) records the
    process on the data directory (sctk.runstate) and lets a swapping command pause it.
    """
    if settings is None:
        settings = config.load().settings
        logs.configure(settings, console_level="INFO")
    # the process's one engine, bus and keyring: every request, loop and check shares them
    rt = Runtime(settings)
    loops = AppLoops(rt, workers, collect, schedule, warm, announce)
    app = FastAPI(
        title="sctk",
        version=__version__,
        description="Scientific Computing Toolkit API. Every endpoint except /health/* and "
        "POST /api/v1/auth/token needs a bearer token: a login JWT or a personal API token.",
        docs_url=None,  # sctk.api.docs_pages serves /docs and /redoc without a CDN
        redoc_url=None,
        lifespan=loops.lifespan,
    )
    app_state.attach(app, rt)
    errors.install(app)
    middleware_stack.install(app, settings, loops.gate, app.state.app_metrics)
    routers.include_api(app)
    routers.include_pages(app)
    return app


ROLE_ENV = "SCTK_SERVE_ROLE"  # set by `sctk serve --role` for uvicorn's worker processes


def served_app() -> FastAPI:
    """The app `sctk serve` runs: settings from the environment; with role 'all' (the
    default) also jobs.workers job loops, the scheduler and alerting; with role 'api' only
    the API (and the collector that /api/v1/metrics reads)."""
    if os.environ.get(ROLE_ENV, "all") == "api":
        return create_app(workers=0, collect=True, schedule=False, warm=True, announce="api")
    return create_app(workers=None, warm=True, announce="all")
