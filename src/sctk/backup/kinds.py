"""Kinds of snapshot, and choosing one by what it is for.

A `regular` snapshot is a backup someone asked for (the nightly task, `sctk backup create`).
A `safety` snapshot is what `restore`, `upgrade` and `rollback` take of the current state
before replacing it (label pre-update): that state may be the damage being repaired, so
"the latest backup" never means a safety snapshot unless the caller asks for them.

A snapshot's status comes from the repository's verification markers, the newest one
deciding: `verified` (bytes and meaning checked), `inconsistent` (its bytes are sound but
what its database names is not all there, see consistency.py) or `unverified`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sctk.errors import SctkError

REGULAR = "regular"
SAFETY = "safety"
KINDS = (REGULAR, SAFETY)
SAFETY_LABELS = frozenset({"pre-update"})

VERIFIED = "verified"
INCONSISTENT = "inconsistent"
UNVERIFIED = "unverified"


def kind_of_label(label: str) -> str:
    """The kind a snapshot of LABEL is."""
    return SAFETY if label in SAFETY_LABELS else REGULAR


def kind_of(info: Any) -> str:
    """The kind of a snapshot (SnapshotInfo or anything with .label and .manifest)."""
    recorded = (getattr(info, "manifest", None) or {}).get("kind")
    return recorded if recorded in KINDS else kind_of_label(info.label)


def regular(snapshots: Iterable[Any]) -> list[Any]:
    """The regular snapshots among SNAPSHOTS, in their order."""
    return [s for s in snapshots if kind_of(s) == REGULAR]


def latest(repo: Any, include_safety: bool = False) -> Any:
    """The newest snapshot, among regular ones unless INCLUDE_SAFETY."""
    snaps = repo.snapshots()
    pool = snaps if include_safety else regular(snaps)
    if not pool:
        if snaps:
            raise SctkError(
                f"Repository {repo.url} holds only safety snapshots (taken before a restore or "
                "an upgrade); name one by its id, or pass --include-safety to use the newest."
            )
        raise repo.no_snapshot_error()  # names damaged snapshot files, if any
    return pool[-1]


def find(repo: Any, ref: str, include_safety: bool = False) -> Any:
    """The snapshot REF names: an id or unique prefix, or 'latest' (see latest())."""
    if (ref or "").strip().lower() == "latest":
        return latest(repo, include_safety)
    return repo.find_snapshot(ref)


def statuses(repo: Any) -> dict[str, tuple[str, datetime, dict]]:
    """Snapshot id -> (status, when, report) from its newest verification marker."""
    out: dict[str, tuple[str, datetime, dict]] = {}
    for sid, (when, report) in repo.verifications().items():
        consistency = (report or {}).get("consistency") or {}
        status = INCONSISTENT if consistency.get("ok") is False else VERIFIED
        out[sid] = (status, when, report or {})
    return out


def problems_of(report: dict) -> list[str]:
    """The sentences an inconsistent verdict recorded."""
    return list(((report or {}).get("consistency") or {}).get("problems") or [])


def newest_usable(repo: Any, *, verified_only: bool = False) -> tuple[Any | None, list[str]]:
    """The newest regular snapshot not marked inconsistent (with VERIFIED_ONLY: the newest
    marked verified), and one sentence for each newer regular snapshot passed over."""
    known = statuses(repo)
    skipped: list[str] = []
    for snap in reversed(regular(repo.snapshots())):
        status, _, report = known.get(snap.id, (UNVERIFIED, None, {}))
        if status == INCONSISTENT:
            first = (problems_of(report) or ["it failed its consistency check"])[0]
            skipped.append(
                f"Skipped snapshot {snap.id[:8]} of {snap.time:%Y-%m-%d %H:%M} UTC: it is "
                f"inconsistent ({first})."
            )
            continue
        if verified_only and status != VERIFIED:
            continue
        return snap, skipped
    return None, skipped
