"""RFC 9457 problem+json for every error; no stack trace ever reaches a client."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
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


def _invalid(error: dict[str, Any]) -> dict[str, str]:
    if error.get("type") == "json_invalid":
        # FastAPI puts the character offset where a field name goes: name the body instead
        reason = (error.get("ctx") or {}).get("error") or "it cannot be decoded"
        return {"field": "body", "message": f"not valid JSON ({reason})"}
    return {"field": _field(tuple(error["loc"])), "message": error["msg"]}


async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_invalid(e) for e in exc.errors()]
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    detail = f"Invalid {first['field']}: {first['message']}."
    return problem(422, detail, title="Invalid request", errors=errors)


async def _sctk_error(_request: Request, exc: SctkError) -> JSONResponse:
    return problem(exc.http_status, exc.message, title=exc.title)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A database error, named by its cause: locked, full, not answering, unreachable."""
    from sctk.storage.engine import database_error, first_line

    state = request.app.state
    engine = getattr(state, "engine", None)
    error = database_error(exc, engine.url if engine is not None else None, state.settings)
    # one line, no traceback: while a database is down every request would log one
    log.warning("database error (%s): %s", error.title, first_line(exc))
    headers = {"Retry-After": "5"} if error.http_status == 503 else None
    return problem(error.http_status, error.message, title=error.title, headers=headers)


async def _os_error(request: Request, exc: OSError) -> JSONResponse:
    """A full disk under any write is 507 naming the data directory; anything else a bug."""
    from sctk.fsutil import no_space_error

    error = no_space_error(exc, f"the data directory {request.app.state.settings.home}")
    if error is None:
        return await _unexpected(request, exc)
    log.warning("write failed: %s", exc)
    return problem(error.http_status, error.message, title=error.title)


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return problem(
        500,
        "An unexpected error occurred; it was logged with this request's id.",
        title="Internal Server Error",
    )


# Every error answer is a problem; the OpenAPI document says so, so that clients (and the
# fuzzing suite, which checks every answer against it) know the shape of each 4xx and 503.
PROBLEM_SCHEMA = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; some errors add members (errors, request_id).",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# status -> why any operation may answer it (the middleware, the dependencies, SctkError)
_COMMON = {
    400: "The request is refused; the detail says why and how to fix it",
    404: "Something the request names does not exist",
    409: "The request conflicts with the current state",
    422: "A parameter or the body is invalid",
    429: "Too many requests; retry after Retry-After seconds",
    503: "The database is unreachable; retry after Retry-After seconds",
    507: "No space left on the data directory's device (or the database's)",
}
_SECURED = {401: "No valid bearer credential", 403: "The role lacks the permission"}
_WITH_BODY = {413: "The request body is larger than the limit"}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the problem+json error answers to every operation of an OpenAPI SCHEMA."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    schema["components"]["schemas"].pop("HTTPValidationError", None)
    schema["components"]["schemas"].pop("ValidationError", None)
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            codes: dict[int, str] = {503: _COMMON[503]}
            if not path.startswith("/health/"):
                codes = dict(_COMMON)
                if operation.get("security"):
                    codes.update(_SECURED)
                if "requestBody" in operation:
                    codes.update(_WITH_BODY)
            responses = operation.setdefault("responses", {})
            for code, why in codes.items():
                answer = responses.setdefault(str(code), {"description": why})
                # FastAPI documents 422 as its own JSON shape; sctk answers a problem
                answer["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
            operation["responses"] = dict(sorted(responses.items()))
    return schema


def _openapi_with_problems(app: FastAPI):
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(plain())
        return app.openapi_schema

    return openapi


def install(app: FastAPI) -> None:
    app.openapi = _openapi_with_problems(app)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SctkError, _sctk_error)
    for database_error in (OperationalError, InterfaceError, PoolTimeout):
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected)
