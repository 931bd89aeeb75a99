"""/api/v1/version."""

from __future__ import annotations

import platform

from fastapi import APIRouter, Request
from pydantic import BaseModel

from sctk import __version__
from sctk.storage import migrate

router = APIRouter(tags=["meta"])


class VersionInfo(BaseModel):
    version: str
    python: str
    schema_head: str
    database: str


@router.get("/version", response_model=VersionInfo, summary="sctk, Python and schema versions.")
def version(request: Request) -> VersionInfo:
    return VersionInfo(
        version=__version__,
        python=platform.python_version(),
        schema_head=migrate.head(),
        database=request.app.state.engine.dialect.name,
    )
