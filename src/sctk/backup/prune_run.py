"""`sctk backup prune`: restic-style retention, then garbage collection of unused chunks.

Regular backups and safety snapshots (see kinds.py) are kept apart: the policy given (or
backup.keep_*) applies to regular backups only, and safety snapshots have their own
(backup.safety_keep_last, backup.safety_keep_within_days). A restore's safety snapshot thus
never pushes the last clean backup out of --keep-last, and never keeps one in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sctk.backup import kinds, runs
from sctk.backup.create import reason
from sctk.backup.location import open_repo, repo_url
from sctk.config import Settings
from sctk.errors import SctkError

if TYPE_CHECKING:
    from sctk.runtime import Runtime

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


def safety_policy_from(settings: Settings, **given: Any):
    """The PrunePolicy of safety snapshots: each value given here, else backup.safety_*."""
    from sctk.backup.repo import PrunePolicy

    values = {}
    for key in ("keep_last", "keep_within_days"):
        value = given.get(key)
        if value is None:
            value = getattr(settings.backup, f"safety_{key}")
        if value < 0:
            raise SctkError(f"--safety-{key.replace('_', '-')} cannot be negative; got {value}.")
        values[key] = value
    # keep_last is never None, so a policy of 0 and 0 keeps no safety snapshot (it is not
    # the empty policy, which keeps everything); within 0 days would still keep the newest
    values["keep_within_days"] = values["keep_within_days"] or None
    return PrunePolicy(**values)


def kept_apart(policy, safety_policy, newest_verified: str | None):
    """A retention plan for Repository.prune: POLICY over regular backups, SAFETY_POLICY over
    safety snapshots, each blind to the other."""
    from sctk.backup.repo.retention import plan as retain

    def plan(snapshots: list) -> tuple[list, list]:
        regular = kinds.regular(snapshots)
        ids = {s.id for s in regular}
        safety = [s for s in snapshots if s.id not in ids]
        kept, removed = retain(regular, policy, newest_verified if newest_verified in ids else None)
        s_kept, s_removed = retain(safety, safety_policy, None)
        kept += [(s, f"safety snapshot: {why}") for s, why in s_kept]
        return kept, removed + s_removed

    return plan


def prune_backups(
    rt: Runtime,
    *,
    dry_run: bool = False,
    actor: str = "system",
    url: str | None = None,
    safety_keep_last: int | None = None,
    safety_keep_within_days: float | None = None,
    phase: Callable[[str, int, int | None], None] | None = None,
    **given: Any,
) -> dict[str, Any]:
    """Apply the policy (given values over settings) to regular backups and the safety
    policy to safety snapshots; the report as a dict.

    {"dry_run", "policy", "kept": [{"id", "reason", "time", "label"}], "removed": [{...}],
     "deleted_packs", "repacked_packs", "freed_bytes", "message"}
    """
    settings = rt.settings
    policy = policy_from(settings, **given)
    safety = safety_policy_from(
        settings, keep_last=safety_keep_last, keep_within_days=safety_keep_within_days
    )
    url = url or repo_url(settings)
    run = runs.start(rt, "prune", actor, url)
    repo = None
    try:
        repo = open_repo(settings, url)
        by_id = {s.id: s for s in repo.snapshots()}
        plan = kept_apart(policy, safety, _newest_verified(repo))
        report = repo.prune(policy, dry_run=dry_run, plan=plan, phase=phase)
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
            "kind": kinds.kind_of(info) if info else None,
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
        "safety_policy": {k: v for k, v in asdict(safety).items() if v is not None},
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


def _newest_verified(repo) -> str | None:
    """The newest snapshot whose newest verification found it usable (always kept)."""
    statuses = kinds.statuses(repo)
    usable = [s for s in repo.snapshots() if statuses.get(s.id, ("",))[0] == kinds.VERIFIED]
    return usable[-1].id if usable else None
