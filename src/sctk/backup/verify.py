"""`sctk backup verify`: the engine's check (structure, or every byte with read_data), and
optionally a restore test; the outcome recorded and, on success, marked in the repository."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from sctk.backup import runs
from sctk.backup.create import reason
from sctk.backup.location import open_repo, repo_url
from sctk.config import Settings
from sctk.errors import SctkError


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
    settings: Settings,
    ref: str | None = None,
    *,
    read_data: bool = False,
    restore_test: bool = False,
    actor: str = "system",
    progress: Callable[[int], None] | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Check the repository (or one snapshot, REF: id, prefix or 'latest').

    Returns {"ok", "snapshot_id", "check": {...}, "restore_test": {...} | None, "marked": [...]}.
    A failed check is returned (ok False) and recorded; it does not raise. Bad input (unknown
    snapshot, no repository, wrong passphrase) raises SctkError and is recorded as well.
    """
    url = url or repo_url(settings)
    run = runs.start(settings, "verify", actor, url)
    repo = None
    snapshot_id = None
    try:
        repo = open_repo(settings, url)
        if ref is None and restore_test:
            ref = "latest"
        if ref is not None:
            snapshot_id = repo.find_snapshot(ref).id
        report = repo.check(read_data=read_data, snapshot_id=snapshot_id, progress=progress)
        check = asdict(report)
        tested = None
        if restore_test and report.ok:
            from sctk.backup.restore_test import restore_test as run_restore_test

            tested = run_restore_test(settings, repo, snapshot_id)
        ok = bool(report.ok) and (tested is None or bool(tested.get("ok")))
        marked: list[str] = []
        if ok:
            targets = [snapshot_id] if snapshot_id else [s.id for s in repo.snapshots()]
            stamp = {
                "read_data": read_data,
                "restore_test": restore_test,
                "seconds": report.seconds,
                "bytes_read": report.bytes_read,
            }
            for sid in targets:
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
    else:
        message = f"The restore test of {what} failed: {tested.get('message', tested)}"
    message += garbage_note(report)
    result = {
        "ok": ok,
        "snapshot_id": snapshot_id,
        "message": message,
        "check": check,
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
            "errors": report.errors[:50],
            "check_seconds": report.seconds,
            "bytes_read": report.bytes_read,
        },
        repo=repo,
    )
    return result
