"""`sctk backup verify`: the engine's check (structure, or every byte with read_data), each
snapshot's meaning (consistency.py), and optionally a restore test; the outcome recorded and,
when the bytes are sound, marked in the repository with the meaning's verdict: a snapshot
whose database names files it does not hold is marked `inconsistent`, not `verified`."""

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


def garbage_note(report) -> str:
    """A sentence on the bytes no snapshot references (empty when there are none)."""
    if not report.unreferenced_bytes:
        return ""
    mib = report.unreferenced_bytes / (1 << 20)
    note = f" {report.unreferenced_bytes} bytes ({mib:.1f} MiB) are referenced by no snapshot"
    if report.leftover_files:
        note += f", {report.leftover_files} file(s) of them left by an interrupted backup"
        return note + "; the next backup takes them over or removes them."
    return note + "; `sctk backup prune` removes them."


def verify_backup(
    rt: Runtime,
    ref: str | None = None,
    *,
    read_data: bool = False,
    restore_test: bool = False,
    actor: str = "system",
    progress: Callable[[int], None] | None = None,
    url: str | None = None,
    include_safety: bool = False,
    phase: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Check the repository (or one snapshot, REF: id, prefix or 'latest').

    'latest' is the newest regular snapshot (any kind with INCLUDE_SAFETY).
    Returns {"ok", "snapshot_id", "check": {...}, "consistency": {id: verdict},
    "inconsistent": [ids], "restore_test": {...} | None, "marked": [...]}.
    A failed check is returned (ok False) and recorded; it does not raise. Bad input (unknown
    snapshot, no repository, wrong passphrase) raises SctkError and is recorded as well.
    """
    settings = rt.settings
    url = url or repo_url(settings)
    run = runs.start(rt, "verify", actor, url)
    repo = None
    snapshot_id = None
    try:
        repo = open_repo(settings, url)
        if ref is None and restore_test:
            ref = "latest"
        if ref is not None:
            snapshot_id = kinds.find(repo, ref, include_safety).id
        # One shared lock for the whole verification: reading each snapshot's database does
        # not take (and list) the lock again, nor list the repository again on remote storage.
        with repo.lock(exclusive=False):
            report = repo.check(
                read_data=read_data, snapshot_id=snapshot_id, progress=progress, phase=phase
            )
            check = asdict(report)
            tested = None
            verdicts: dict[str, dict[str, Any]] = {}
            targets = [snapshot_id] if snapshot_id else [s.id for s in repo.snapshots()]
            if report.ok:
                verdicts, tested = _meanings(
                    settings, repo, targets, snapshot_id if restore_test else None
                )
        inconsistent = [sid for sid in targets if verdicts.get(sid, {}).get("ok") is False]
        tested_ok = tested is None or bool(tested.get("ok"))
        ok = bool(report.ok) and tested_ok and not inconsistent
        marked: list[str] = []
        if report.ok and tested_ok:
            for sid in targets:
                stamp = {
                    "read_data": read_data,
                    "restore_test": restore_test,
                    "seconds": report.seconds,
                    "bytes_read": report.bytes_read,
                    "consistency": verdicts.get(sid, {}),
                }
                repo.mark_verified(sid, stamp)
                marked.append(sid)
    except BaseException as exc:
        why = reason(exc)
        runs.finish(
            run, False, why, snapshot_id=snapshot_id, details={"read_data": read_data}, repo=repo
        )
        if isinstance(exc, SctkError | OSError):
            raise SctkError(why) from None
        raise
    what = f"snapshot {snapshot_id[:8]}" if snapshot_id else "the repository"
    mode = "every byte read" if read_data else "structure"
    if ok:
        message = f"Verified {what} ({mode}, {report.seconds:.1f} s): no errors."
        if tested is not None:
            message += f" Restore test: {tested.get('message', 'passed')}"
    elif not report.ok:
        first = report.errors[0] if report.errors else "unknown error"
        message = f"Verification of {what} found {len(report.errors)} error(s); first: {first}"
    elif inconsistent:
        message = " ".join(
            f"Snapshot {sid[:8]} is inconsistent ({len(verdicts[sid]['problems'])} problem(s); "
            f"first: {verdicts[sid]['problems'][0]}): its bytes are sound but it would not "
            "restore a usable service, so it is marked inconsistent and the restore drill and "
            "emergency restore skip it."
            for sid in inconsistent
        )
    else:
        message = f"The restore test of {what} failed: {tested.get('message', tested)}"
    message += garbage_note(report)
    result = {
        "ok": ok,
        "snapshot_id": snapshot_id,
        "message": message,
        "check": check,
        "consistency": verdicts,
        "inconsistent": inconsistent,
        "restore_test": tested,
        "marked": marked,
    }
    runs.finish(
        run,
        ok,
        message,
        snapshot_id=snapshot_id,
        details={
            "read_data": read_data,
            "restore_test": tested,
            "inconsistent": inconsistent,
            "errors": report.errors[:50],
            "check_seconds": report.seconds,
            "bytes_read": report.bytes_read,
        },
        repo=repo,
    )
    return result


def _meanings(
    settings: Settings, repo, targets: list[str], tested_id: str | None
) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Each target's consistency verdict (kept from its marker when one found it usable: a
    snapshot never changes), and the restore test of TESTED_ID, on one scratch load each."""
    from sctk.backup import consistency
    from sctk.backup.scratch_restore import restore_test, scratch_database

    known = kinds.statuses(repo)
    verdicts: dict[str, dict[str, Any]] = {}
    tested = None
    for sid in targets:
        prior = (known.get(sid, (None, None, {}))[2] or {}).get("consistency") or {}
        if prior.get("ok") is True and sid != tested_id:
            verdicts[sid] = prior
            continue
        info = repo.find_snapshot(sid)
        try:
            with scratch_database(settings, repo, info) as url:
                verdicts[sid] = consistency.check(url, lambda p, s=sid: repo.sha256_of(s, p))
                if sid == tested_id:
                    tested = restore_test(settings, repo, sid, url)
        except SctkError as exc:  # e.g. a PostgreSQL snapshot seen from a SQLite directory
            verdicts[sid] = {"ok": None, "problems": [], "skipped": exc.message}
    return verdicts, tested
