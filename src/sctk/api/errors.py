"""RFC 9457 problem+json for every error; no stack trace ever reaches a client."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sctk.errors import SctkError
from sctk.logs import request_id

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    detail: str,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    rid = request_id.get()
    if rid:
        body["request_id"] = rid
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    if not loc:
        return "request"
    return ".".join(parts) or str(loc[0])


async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    return problem(exc.status_code, detail, headers=dict(exc.headers or {}))


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    detail = f"Invalid {first['field']}: {first['message']}."
    return problem(422, detail, title="Invalid request", errors=errors)


async def _sctk_error(_request: Request, exc: SctkError) -> JSONResponse:
    return problem(exc.http_status, exc.message, title=exc.title)


async def _database_unreachable(_request: Request, exc: OperationalError) -> JSONResponse:
    from sctk.storage.engine import unreachable

    log.error("database unreachable", exc_info=exc)
    error = unreachable(exc)
    return problem(503, error.message, title=error.title, headers={"Retry-After": "5"})


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return problem(
        500,
        "An unexpected error occurred; it was logged with this request's id.",
        title="Internal Server Error",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SctkError, _sctk_error)
    app.add_exception_handler(OperationalError, _database_unreachable)
    app.add_exception_handler(Exception, _unexpected)
