"""POST /api/v1/auth/token: exchange a username and password for a short-lived JWT.

Two bodies are accepted: sctk's JSON (`{"username": ..., "password": ...}`) and the form of
the OAuth2 password flow (RFC 6749 section 4.3: application/x-www-form-urlencoded with
grant_type=password), which is what Swagger UI's "Authorize" dialog and OAuth2 client
libraries send. Both end in the same domain function, so lockout and audit are the same.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sctk.api.deps import client_address
from sctk.api.errors import problem
from sctk.security import tokens, users
from sctk.security.auth_errors import AccountLocked, AuthenticationFailed
from sctk.security.ratelimit import retry_after_header

router = APIRouter(tags=["auth"])
TOKEN_PATH = "/auth/token"
FORM = "application/x-www-form-urlencoded"
_MAX_RETRY_AFTER = 24 * 3600.0  # a lock kept until an admin lifts it: ask again tomorrow
_MAX_FORM_FIELDS = 16


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class PasswordForm(Credentials):
    """The OAuth2 password grant's form fields. There are no registered clients, so a
    client_id and client_secret are accepted but not checked; roles, not scopes, decide what
    a token may do, so a scope must be empty."""

    grant_type: str = Field(min_length=1, max_length=64, description="Must be 'password'.")
    scope: str = Field("", max_length=1000, description="Must be empty: roles, not scopes, decide.")
    client_id: str | None = Field(None, max_length=256)
    client_secret: str | None = Field(None, max_length=256)


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


def _invalid(exc: ValidationError) -> RequestValidationError:
    """A pydantic error of the body, answered as FastAPI answers its own (422 problem)."""
    return RequestValidationError(
        [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
    )


def _from_json(raw: bytes) -> Credentials:
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        error = {"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error"}
        raise RequestValidationError([{**error, "ctx": {"error": reason}}]) from None
    try:
        return Credentials.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


class _FormProblem(Exception):
    """A form the OAuth2 password flow refuses: 400 with the RFC 6749 error code."""

    def __init__(self, detail: str, error: str):
        super().__init__(detail)
        self.detail, self.error = detail, error


def _from_form(raw: bytes) -> PasswordForm:
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=bool(raw),
            max_num_fields=_MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _FormProblem(
            "The body is not a valid application/x-www-form-urlencoded form of UTF-8 "
            "name=value pairs.",
            "invalid_request",
        ) from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise _FormProblem(
                f"The form field '{key}' is given more than once.", "invalid_request"
            )
        fields[key] = value
    try:
        form = PasswordForm.model_validate(fields)
    except ValidationError as exc:
        raise _invalid(exc) from None
    if form.grant_type != "password":
        raise _FormProblem(
            f"The grant_type '{form.grant_type}' is not supported; this endpoint takes only "
            "grant_type=password (the OAuth2 password flow).",
            "unsupported_grant_type",
        )
    if form.scope.strip():
        raise _FormProblem(
            "sctk grants by role, not by scope; leave the scope field empty.", "invalid_scope"
        )
    return form


def _credentials_schema() -> dict[str, Any]:
    schema = Credentials.model_json_schema()
    schema.pop("title", None)
    return schema


def _form_schema() -> dict[str, Any]:
    schema = PasswordForm.model_json_schema()
    schema.pop("title", None)
    schema["properties"]["grant_type"]["enum"] = ["password"]
    return schema


@router.post(
    TOKEN_PATH,
    response_model=AccessToken,
    summary="Log in with a username and password; returns a short-lived bearer JWT.",
    description=(
        "The body is either JSON (`username`, `password`) or, as the OAuth2 password flow "
        "sends it (RFC 6749 section 4.3), an application/x-www-form-urlencoded form with "
        "`grant_type=password`, `username` and `password` (`client_id` and `client_secret` "
        "are accepted and not checked; `scope` must be empty). The answer is the same for "
        "both: an OAuth2 bearer token response."
    ),
    responses={
        400: {"description": "A form with another grant_type, or a malformed form"},
        401: {"description": "Wrong credentials, or the account is disabled"},
        429: {"description": "Too many failed logins for this account (from this address)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _credentials_schema()},
                FORM: {"schema": _form_schema()},
            },
        }
    },
)
async def login(request: Request, response: Response):
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    raw = await request.body()
    if media == FORM:
        try:
            body: Credentials = _from_form(raw)
        except _FormProblem as exc:
            return problem(400, exc.detail, title="Invalid login form", error=exc.error)
    else:  # as FastAPI reads a JSON body: whatever the content type says
        body = _from_json(raw)
    # RFC 6749 section 5.1: a token response is never cached
    response.headers["Cache-Control"] = "no-store"
    return await run_in_threadpool(_login, request, body.username, body.password)


def _login(request: Request, username: str, password: str):
    state = request.app.state
    policy = state.settings.security
    with state.sessionmaker() as session:
        try:
            user = users.authenticate(session, username, password, client_address(request), policy)
        except AccountLocked as exc:
            session.commit()  # keep the record of the refused attempt
            wait = retry_after_header(min(exc.retry_after, _MAX_RETRY_AFTER))
            return problem(429, exc.message, title=exc.title, headers={"Retry-After": wait})
        except AuthenticationFailed as exc:
            session.commit()  # keep the record of the failed attempt (and any lockout)
            return problem(
                401, exc.message, title=exc.title, headers={"WWW-Authenticate": "Bearer"}
            )
        token, ttl = tokens.issue_jwt(
            state.keyring, user, timedelta(minutes=policy.jwt_ttl_minutes)
        )
        session.commit()
    return AccessToken(access_token=token, expires_in=ttl)
