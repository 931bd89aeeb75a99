"""/api/v1/audit-log: read and verify the tamper-evident audit chain (admins)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from sctk.api.deps import SessionDep, require
from sctk.security import audit_log

router = APIRouter(tags=["audit"])


@router.get("/audit-log", summary="Audit entries, newest first.")
def list_entries(
    session: SessionDep,
    _admin=require("audit.read"),
    since: str | None = Query(None, max_length=40, description="ISO time or a duration: 24h."),
    user: str | None = Query(None, max_length=64, description="By or about this user."),
    event: str | None = Query(None, max_length=64, description="Exact event or a prefix."),
    limit: int = Query(100, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    start = audit_log.parse_since(since) if since else None
    return [
        audit_log.as_dict(e)
        for e in audit_log.entries(session, since=start, user=user, event=event, limit=limit)
    ]


@router.get("/audit-log/verify", summary="Walk the chain; name the first broken link.")
def verify_chain(session: SessionDep, _admin=require("audit.read")) -> dict[str, Any]:
    return audit_log.verify(session).to_dict()
