"""The order of the API's middleware. Starlette runs the last added first, so they are
added innermost first."""

from __future__ import annotations

from fastapi import FastAPI

from sctk.api.middleware import AccessMiddleware, ClientAddressMiddleware, LimitsMiddleware
from sctk.api.pausing import PauseGate, PauseMiddleware
from sctk.config import Settings
from sctk.monitoring.appmetrics import AppMetrics
from sctk.security.ratelimit import RateLimiter


def install(app: FastAPI, settings: Settings, gate: PauseGate, metrics: AppMetrics) -> None:
    sec = settings.security
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
    app.add_middleware(AccessMiddleware, metrics=metrics)
    if sec.trusted_proxies:  # before everything else: limits and logs see the real client
        app.add_middleware(ClientAddressMiddleware, trusted_proxies=sec.trusted_proxies)
