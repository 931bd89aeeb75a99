"""What an app keeps on `app.state` for its requests and loops: the runtime's parts, the
credential cache and rate limiter, and the loops' places (empty until the app starts)."""

from __future__ import annotations

from fastapi import FastAPI

from sctk.monitoring.appmetrics import AppMetrics
from sctk.runtime import Runtime
from sctk.security.credentials import CredentialCache
from sctk.security.ratelimit import RateLimiter


def attach(app: FastAPI, rt: Runtime) -> None:
    settings, sec = rt.settings, rt.settings.security
    app.state.runtime = rt
    app.state.settings = settings
    app.state.engine = rt.engine
    app.state.sessionmaker = rt.sessionmaker
    app.state.keyring = rt.keyring
    app.state.credential_cache = CredentialCache(sec.auth_cache_seconds)
    app.state.identity_limiter = RateLimiter(sec.rate_limit_per_minute, sec.rate_limit_burst)
    app.state.collector = None
    app.state.watch = None
    app.state.scheduler = None
    app.state.job_workers = None
    app.state.app_metrics = AppMetrics(
        rt.engine,
        lambda: app.state.collector,
        settings.home,
        bus=lambda: getattr(app.state, "bus", None),  # set when the app starts
        uq=settings.uq,
    )
