"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from sctk import __version__, config, logs
from sctk.api import errors
from sctk.api.middleware import RequestIdMiddleware
from sctk.api.routes import health, meta
from sctk.config import Settings
from sctk.storage.engine import make_engine


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for SETTINGS (default: loaded from SCTK_HOME and the environment)."""
    if settings is None:
        settings = config.load().settings
        logs.configure(settings, console_level="INFO")
    engine = make_engine(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        title="sctk",
        version=__version__,
        description="Scientific Computing Toolkit API.",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    errors.install(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(meta.router, prefix="/api/v1")
    return app
