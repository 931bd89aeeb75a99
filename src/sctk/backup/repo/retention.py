"""Which snapshots a retention policy keeps, with restic's `forget --keep-*` semantics.

Snapshots are walked newest first. keep_last keeps the N newest. keep_daily/weekly/monthly
keep the newest snapshot of each of the N most recent calendar days/ISO weeks/months that
have a snapshot (UTC). keep_within_days keeps every snapshot taken within that many days
before the newest snapshot (not before now: an idle repository is not emptied by time).
A snapshot kept by several rules lists every reason. The newest verified snapshot is always
kept, whatever the policy.
"""

from __future__ import annotations

from datetime import timedelta

from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.models import PrunePolicy, SnapshotInfo


def _buckets(s: SnapshotInfo) -> dict[str, str]:
    t = s.time
    year, week, _ = t.isocalendar()
    return {
        "daily": t.strftime("%Y-%m-%d"),
        "weekly": f"{year}-W{week:02d}",
        "monthly": t.strftime("%Y-%m"),
    }


def plan(
    snapshots: list[SnapshotInfo], policy: PrunePolicy, newest_verified: str | None
) -> tuple[list[tuple[SnapshotInfo, str]], list[SnapshotInfo]]:
    """(kept with their reasons, removed), both newest first."""
    for name in ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_within_days"):
        value = getattr(policy, name)
        if value is not None and value < 0:
            raise RepoError(f"{name.replace('_', '-')} is {value}; use a number of 0 or more.")
    ordered = sorted(snapshots, key=lambda s: (s.time, s.id), reverse=True)
    if policy.is_empty():
        return [(s, "no policy") for s in ordered], []
    counters = {
        "daily": policy.keep_daily or 0,
        "weekly": policy.keep_weekly or 0,
        "monthly": policy.keep_monthly or 0,
    }
    last_bucket: dict[str, str | None] = {k: None for k in counters}
    keep_last = policy.keep_last or 0
    within = None
    if policy.keep_within_days is not None and ordered:
        within = ordered[0].time - timedelta(days=policy.keep_within_days)
    kept: list[tuple[SnapshotInfo, str]] = []
    removed: list[SnapshotInfo] = []
    for i, snap in enumerate(ordered):
        reasons = []
        if i < keep_last:
            reasons.append("last snapshot")
        buckets = _buckets(snap)
        for rule in ("daily", "weekly", "monthly"):
            if counters[rule] > 0 and buckets[rule] != last_bucket[rule]:
                last_bucket[rule] = buckets[rule]
                counters[rule] -= 1
                reasons.append(f"{rule} snapshot")
        if within is not None and snap.time >= within:
            reasons.append(f"within {policy.keep_within_days:g} days")
        if snap.id == newest_verified:
            reasons.append("newest verified snapshot")
        if reasons:
            kept.append((snap, ", ".join(reasons)))
        else:
            removed.append(snap)
    return kept, removed
