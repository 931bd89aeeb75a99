"""`sctk backup prune`: restic-style retention, then garbage collection of unused chunks."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sctk.backup import runs
from sctk.backup.create import reason
from sctk.backup.location import open_repo, repo_url
from sctk.config import Settings
from sctk.errors import SctkError

POLICY_KEYS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_within_days")


def policy_from(settings: Settings, **given: Any):
    """A PrunePolicy: each value given here, else the setting backup.<key>."""
    from sctk.backup.repo import PrunePolicy

    values = {}
    for key in POLICY_KEYS:
        value = given.get(key)
        if value is None:
            value = getattr(settings.backup, key)
        if value is not None and value < 0:
            raise SctkError(f"--{key.replace('_', '-')} cannot be negative; got {value}.")
        values[key] = value
    if not any(values.values()):
        raise SctkError(
            "This retention policy keeps nothing, so prune would remove every snapshot; give "
            "at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly or "
            "--keep-within above 0."
        )
    return PrunePolicy(**values)


def prune_backups(
    settings: Settings,
    *,
    dry_run: bool = False,
    actor: str = "system",
    url: str | None = None,
    **given: Any,
) -> dict[str, Any]:
    """Apply the policy (given values over settings); the report as a dict.

    {"dry_run", "policy", "kept": [{"id", "reason", "time", "label"}], "removed": [{...}],
     "deleted_packs", "repacked_packs", "freed_bytes", "message"}
    """
    policy = policy_from(settings, **given)
    url = url or repo_url(settings)
    run = runs.start(settings, "prune", actor, url)
    repo = None
    try:
        repo = open_repo(settings, url)
        by_id = {s.id: s for s in repo.snapshots()}
        report = repo.prune(policy, dry_run=dry_run)
    except BaseException as exc:
        why = reason(exc)
        runs.finish(run, False, why, details={"dry_run": dry_run}, repo=repo)
        if isinstance(exc, SctkError | OSError):
            raise SctkError(why) from None
        raise

    def describe(sid: str, why: str | None = None) -> dict[str, Any]:
        info = by_id.get(sid)
        out: dict[str, Any] = {
            "id": sid,
            "time": info.time.isoformat() if info else None,
            "label": info.label if info else None,
        }
        if why is not None:
            out["reason"] = why
        return out

    verb = "would remove" if dry_run else "removed"
    message = (
        f"Prune {verb} {len(report.removed_snapshots)} snapshot(s), kept {len(report.kept)}"
        + ("" if dry_run else f", freed {report.freed_bytes} bytes")
        + "."
    )
    result = {
        "dry_run": dry_run,
        "policy": asdict(policy),
        "kept": [describe(sid, why) for sid, why in report.kept],
        "removed": [describe(sid) for sid in report.removed_snapshots],
        "deleted_packs": report.deleted_packs,
        "repacked_packs": report.repacked_packs,
        "freed_bytes": report.freed_bytes,
        "message": message,
    }
    runs.finish(
        run,
        True,
        message,
        details={k: v for k, v in result.items() if k != "message"},
        repo=repo,
    )
    return result
