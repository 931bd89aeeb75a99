"""The API's edge, before routing (pure ASGI: no per-request task): a request id, one
structured log line and the request metrics for every request; per-address rate limits and a
body size cap."""

from __future__ import annotations

import logging
import os
import re
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sctk.logs import request_id
from sctk.monitoring.appmetrics import AppMetrics, route_template

log = logging.getLogger("sctk.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class AccessMiddleware:
    """Take a sane X-Request-ID from the client or make one; echo it; log the request and
    count it in METRICS (method, route template, status, duration).

    One middleware for the three, as they need the same start time and status: each ASGI
    layer wraps `send` again on every request, and on a trivial request (a health probe) a
    layer of its own for the metrics cost more than the counting itself.
    """

    def __init__(self, app: ASGIApp, metrics: AppMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _VALID_ID.match(given) else os.urandom(16).hex()
        token = request_id.set(rid)
        start = time.perf_counter()
        status = 500
        started = False
        https = scope.get("scheme") == "https"

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
                if https:  # served over TLS: browsers keep to HTTPS from now on
                    message["headers"].append(_HSTS)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:
                raise
            # Answer here, while the request id is still set: Starlette's own 500 handler runs
            # outside this middleware, after the id is reset, so the response and the logged
            # error would otherwise not carry the id the client needs to report the failure.
            from sctk.api.errors import _unexpected

            response = await _unexpected(None, exc)
            await response(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - start
            self.metrics.observe(scope["method"], route_template(scope), status, duration)
            # Load balancers poll the health probes every few seconds: an answered probe is a
            # DEBUG line, so that the access log holds the requests people made (a failing
            # probe stays INFO). The metrics count every probe either way.
            level = (
                logging.DEBUG
                if status < 400 and scope["path"].startswith("/health/")
                else logging.INFO
            )
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(duration * 1000, 2),
                    },
                )
            request_id.reset(token)


class _BodyTooLarge(HTTPException):
    """Raised from `receive` when a body without Content-Length outgrows the limit.

    An HTTPException because FastAPI turns any other error raised while it reads a body into
    "400 There was an error parsing the body"; this one it re-raises, and the app's handler
    answers 413 problem+json.
    """

    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than the limit of {limit} bytes.")


class LimitsMiddleware:
    """Per-client-address rate limit and a cap on request body size, before any routing.

    Health probes are exempt: a load balancer polling them must never be throttled.
    BODY_LIMITS gives paths (exact, e.g. an upload endpoint) a body cap of their own.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter,
        max_body_bytes: int,
        body_limits: dict[str, int] | None = None,
    ):
        self.app = app
        self.limiter = limiter
        self.max_body = max_body_bytes
        self.body_limits = dict(body_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/health/"):
            await self.app(scope, receive, send)
            return
        from sctk.api.errors import problem
        from sctk.security.ratelimit import retry_after_header

        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.limiter.hit(f"addr:{client}")
        if wait:
            response = problem(
                429,
                "Too many requests from this address; slow down and retry later.",
                headers={"Retry-After": retry_after_header(wait)},
            )
            await response(scope, receive, send)
            return
        max_body = self.body_limits.get(scope["path"], self.max_body)

        def too_large():
            # built only when needed: a problem response costs a JSON encoding per request
            return problem(
                413,
                f"The request body is larger than the limit of {max_body} bytes.",
                title="Request too large",
            )

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            await too_large()(scope, receive, send)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise _BodyTooLarge(max_body)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_large()(scope, receive, send)


class ClientAddressMiddleware:
    """Put the client's address behind trusted reverse proxies into scope["client"], so the
    rate limits, lockouts, audit entries and logs all see the same address.

    Installed only when security.trusted_proxies names some: with none, X-Forwarded-For is
    ignored and the peer is the client.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: list[str]):
        from sctk.security.proxies import parse_networks

        self.app = app
        self.networks = parse_networks(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("client"):
            from sctk.security.proxies import client_address

            forwarded = [v for k, v in scope.get("headers") or [] if k == b"x-forwarded-for"]
            if forwarded:
                # several headers are one list, in order (RFC 9110, section 5.3)
                header = ",".join(v.decode("latin-1") for v in forwarded)
                host, port = scope["client"]
                client = client_address(host, header, self.networks)
                if client != host:
                    scope = dict(scope)
                    scope["client"] = (client, port)
        await self.app(scope, receive, send)
