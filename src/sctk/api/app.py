"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from sqlalchemy.orm import sessionmaker

from sctk import __version__, config, logs
from sctk.api import errors
from sctk.api.deps import require
from sctk.api.middleware import LimitsMiddleware, RequestIdMiddleware
from sctk.api.routes import audit, auth, health, keys, meta, tokens, users
from sctk.config import Settings
from sctk.security.credentials import CredentialCache
from sctk.security.keyring import Keyring
from sctk.security.ratelimit import RateLimiter
from sctk.storage.engine import make_engine


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for SETTINGS (default: loaded from SCTK_HOME and the environment)."""
    if settings is None:
        settings = config.load().settings
        logs.configure(settings, console_level="INFO")
    engine = make_engine(settings)
    sec = settings.security

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="sctk",
        version=__version__,
        description="Scientific Computing Toolkit API. Every endpoint except /health/* and "
        "POST /api/v1/auth/token needs a bearer token: a login JWT or a personal API token.",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker(engine, expire_on_commit=False)
    app.state.keyring = Keyring.load(settings.home)
    app.state.credential_cache = CredentialCache(sec.auth_cache_seconds)
    app.state.identity_limiter = RateLimiter(sec.rate_limit_per_minute, sec.rate_limit_burst)
    errors.install(app)
    # the last added runs first: ids are assigned before limits can refuse a request
    app.add_middleware(
        LimitsMiddleware,
        limiter=RateLimiter(sec.client_rate_limit_per_minute, sec.rate_limit_burst),
        max_body_bytes=sec.max_body_bytes,
    )
    app.add_middleware(RequestIdMiddleware)

    app.include_router(health.router)
    v1 = APIRouter(prefix="/api/v1")
    v1.include_router(auth.router)
    v1.include_router(meta.router, dependencies=[require("read")])
    v1.include_router(users.router)
    v1.include_router(tokens.router)
    v1.include_router(keys.router)
    v1.include_router(audit.router)
    app.include_router(v1)
    return app
