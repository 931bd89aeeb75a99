"""The FastAPI application factory."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.concurrency import run_in_threadpool

from sctk import __version__, config, logs
from sctk.api import docs_pages, errors
from sctk.api.deps import require
from sctk.api.middleware import AccessMiddleware, ClientAddressMiddleware, LimitsMiddleware
from sctk.api.pausing import PauseGate, PauseMiddleware
from sctk.api.routes import alerts as alerts_routes
from sctk.api.routes import audit, auth, health, keys, meta, tokens, users, ws
from sctk.api.routes import backups as backups_routes
from sctk.api.routes import data as data_routes
from sctk.api.routes import incidents as incidents_routes
from sctk.api.routes import jobs as jobs_routes
from sctk.api.routes import maintenance as maintenance_routes
from sctk.api.routes import metrics as metrics_routes
from sctk.api.routes import models as models_routes
from sctk.api.routes import observations as observations_routes
from sctk.config import Settings
from sctk.jobs.worker import start_workers, stop_workers
from sctk.monitoring.appmetrics import AppMetrics
from sctk.runtime import Runtime
from sctk.security.credentials import CredentialCache
from sctk.security.ratelimit import RateLimiter
from sctk.web import routes as web


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
    engine = rt.engine
    sec = settings.security

    gate = PauseGate()

    def start_loops(_app: FastAPI) -> None:
        """Start the job workers, collector, alerting and scheduler this app runs."""
        _app.state.job_workers = start_workers(
            rt, settings.jobs.workers if workers is None else workers
        )
        serving = workers is None
        scheduling = (
            (serving and settings.maintenance.scheduler_in_serve) if schedule is None else schedule
        )
        if serving if collect is None else collect:
            from sctk.monitoring.collector import Collector

            _app.state.collector = Collector.from_settings(settings, engine).start()
            if scheduling:  # alerting goes with the scheduler: one place raises alerts
                from sctk.monitoring.watch import start_watch

                _app.state.watch = start_watch(
                    settings, _app.state.sessionmaker, _app.state.collector, _app.state.bus
                )
        _app.state.scheduler = None
        if scheduling:
            from sctk.ops.scheduler import Scheduler

            # every such process runs one; the lease lets only one of them act
            _app.state.scheduler = Scheduler(rt).start()

    def stop_loops(_app: FastAPI) -> None:
        if _app.state.scheduler is not None:
            _app.state.scheduler.stop()
        if _app.state.watch is not None:
            _app.state.watch.close()
        if _app.state.collector is not None:
            _app.state.collector.stop()
        _app.state.watch = _app.state.collector = _app.state.scheduler = None
        stop_workers(_app.state.job_workers)
        _app.state.job_workers = None

    def pause(_app: FastAPI) -> None:
        """Stop using the database: no new request, the running ones and the loops done,
        every connection closed (a command is about to swap the data directory)."""
        from sctk.runstate import pause_requested

        gate.close(lambda: pause_requested(settings.home))
        stop_loops(_app)
        _app.state.bus.engine.dispose()  # the runtime's own unless a bus was made before
        rt.release()

    def resume(_app: FastAPI) -> None:
        """Reopen on what the swap left: fresh connections, keys and credentials."""
        rt.release()  # nothing opened meanwhile may outlive the swap
        _app.state.bus.engine.dispose()
        _app.state.keyring = rt.reload_keyring()
        _app.state.credential_cache = CredentialCache(sec.auth_cache_seconds)
        start_loops(_app)
        gate.open()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from sctk import runstate

        watcher = None
        if announce is not None:
            await run_in_threadpool(runstate.wait_while_paused, settings.home)
            # one record per served process (uvicorn's workers each have theirs), before it
            # opens the database: restore, upgrade and rollback refuse while it is there, or
            # pause it (--coordinate)
            runstate.write_pid(settings.home, url=os.environ.get(SERVE_URL_ENV), role=announce)
        try:
            # the process's bus: job events recorded here or (PostgreSQL) elsewhere reach it
            bus = _app.state.bus = rt.bus
            await run_in_threadpool(bus.start)  # waits for LISTEN: blocking, so off the loop
            try:
                await run_in_threadpool(start_loops, _app)
                if warm:
                    from sctk.api.warmup import warm_up

                    await run_in_threadpool(warm_up)
                if announce is not None:
                    watcher = runstate.PauseWatcher(
                        settings.home, lambda: pause(_app), lambda: resume(_app)
                    ).start()
                yield
            finally:
                if watcher is not None:
                    await run_in_threadpool(watcher.stop, False)
                await run_in_threadpool(stop_loops, _app)  # none left when stopped paused
                await run_in_threadpool(bus.stop)
                rt.close()
        finally:
            if announce is not None:
                runstate.clear_pid(settings.home)

    app = FastAPI(
        title="sctk",
        version=__version__,
        description="Scientific Computing Toolkit API. Every endpoint except /health/* and "
        "POST /api/v1/auth/token needs a bearer token: a login JWT or a personal API token.",
        docs_url=None,  # sctk.api.docs_pages serves /docs and /redoc without a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = rt
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = rt.sessionmaker
    app.state.keyring = rt.keyring
    app.state.credential_cache = CredentialCache(sec.auth_cache_seconds)
    app.state.identity_limiter = RateLimiter(sec.rate_limit_per_minute, sec.rate_limit_burst)
    app.state.collector = None
    app.state.watch = None
    app.state.scheduler = None
    app.state.job_workers = None
    app.state.app_metrics = AppMetrics(
        engine,
        lambda: app.state.collector,
        settings.home,
        bus=lambda: getattr(app.state, "bus", None),  # set when the app starts
        uq=settings.uq,
    )
    errors.install(app)
    # innermost: only requests that would reach a route are counted, or turned away paused
    app.add_middleware(PauseMiddleware, gate=gate)
    # the last added runs first: ids are assigned before limits can refuse a request
    app.add_middleware(
        LimitsMiddleware,
        limiter=RateLimiter(sec.client_rate_limit_per_minute, sec.rate_limit_burst),
        max_body_bytes=sec.max_body_bytes,
        # uploads stream to disk and enforce their own, larger limit (data.max_upload_bytes)
        body_limits={"/api/v1/datasets": settings.data.max_upload_bytes},
    )
    # outermost: every request gets an id, a log line and its count, refused ones too
    app.add_middleware(AccessMiddleware, metrics=app.state.app_metrics)
    if sec.trusted_proxies:  # before everything else: limits and logs see the real client
        app.add_middleware(ClientAddressMiddleware, trusted_proxies=sec.trusted_proxies)

    app.include_router(health.router)
    app.include_router(ws.router)
    app.include_router(metrics_routes.router)
    v1 = APIRouter(prefix="/api/v1")
    v1.include_router(auth.router)
    v1.include_router(meta.router, dependencies=[require("read")])
    v1.include_router(users.router)
    v1.include_router(tokens.router)
    v1.include_router(keys.router)
    v1.include_router(audit.router)
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
    web.install(app)  # the dashboard: static pages that call the API above
    docs_pages.install(app)
    return app


ROLE_ENV = "SCTK_SERVE_ROLE"  # set by `sctk serve --role` for uvicorn's worker processes
SERVE_URL_ENV = "SCTK_SERVE_URL"  # and the address served, for their records


def served_app() -> FastAPI:
    """The app `sctk serve` runs: settings from the environment; with role 'all' (the
    default) also jobs.workers job loops, the scheduler and alerting; with role 'api' only
    the API (and the collector that /api/v1/metrics reads)."""
    if os.environ.get(ROLE_ENV, "all") == "api":
        return create_app(workers=0, collect=True, schedule=False, warm=True, announce="api")
    return create_app(workers=None, warm=True, announce="all")
