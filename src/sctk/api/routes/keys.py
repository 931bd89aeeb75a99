"""/api/v1/keys: the encryption keyring (admins)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request

from sctk.api.deps import require
from sctk.security import rotation

router = APIRouter(tags=["keys"])


@router.get("/keys", summary="Key ids, ages, states and how many values each encrypts.")
def key_status(request: Request, _admin=require("keys.manage")) -> list[dict[str, Any]]:
    return [k.as_dict() for k in rotation.status(request.app.state.runtime)]


@router.post("/keys/rotate", summary="Add a key, re-encrypt every value, retire the old keys.")
def rotate_keys(
    request: Request, admin=require("keys.manage"), revoke_sessions: bool = False
) -> dict[str, Any]:
    """Login sessions run until they expire unless `revoke_sessions=true` ends them all."""
    report = rotation.rotate(
        request.app.state.runtime, actor=admin.username, revoke_sessions=revoke_sessions
    )
    if revoke_sessions:  # this process stops trusting the JWTs it verified before, at once
        request.app.state.credential_cache.clear()
    return asdict(report)
