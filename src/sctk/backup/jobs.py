"""Job kinds `backup.create` and `backup.verify`, queued by the API (POST /api/v1/backups).

Parameters: backup.create {"label": "manual"};
backup.verify {"snapshot": "<id or prefix>", "read_data": false}.
The audit log names the job's owner (whoever submitted it, ctx.owner) as the actor.
The passphrase comes from the worker's own environment or backup.passphrase_file: it never
travels in job parameters (they are stored in the database and shown by `sctk jobs show`).
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from sctk.errors import SctkError
from sctk.jobs.kinds import JobCancelled, JobContext, JobTimedOut, job_kind

CREATE = "backup.create"
VERIFY = "backup.verify"
PERMISSION = "backups.manage"


def _runtime(ctx: JobContext):
    """The runtime of the process running the job (one per data directory and process)."""
    from sctk.jobs.child_engine import runtime_for

    return runtime_for(ctx.home)


def _owner(ctx: JobContext) -> str:
    return f"job:{ctx.owner or 'system'}"[:64]


def create_params(label: str = "manual") -> dict[str, Any]:
    from sctk.backup.create import check_label

    return {"label": check_label(label)}


def verify_params(snapshot: str, read_data: bool = False) -> dict[str, Any]:
    from sctk.backup.catalog import check_ref

    return {"snapshot": check_ref(snapshot), "read_data": bool(read_data)}


@job_kind(CREATE, "Back up the data directory into the backup repository.", PERMISSION)
def backup_create(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from sctk.backup.create import create_backup, summarize

    unknown = sorted(set(params) - {"label"})
    if unknown:
        raise SctkError(f"backup.create does not know the parameter(s) {', '.join(unknown)}.")

    def progress(done: int, total: int | None) -> None:
        ctx.checkpoint()  # a cancel stops the backup between two pieces of a file
        if total:
            ctx.progress(min(0.99, done / total), f"{done} of {total} bytes")

    snapshot = create_backup(
        _runtime(ctx),
        str(params.get("label") or "manual"),
        actor=_owner(ctx),
        progress=progress,
    )
    ctx.log(f"snapshot {snapshot['id']} written")
    # the last progress message is the job's message once it ends: the snapshot's final
    # size, not the byte count of the last piece read (the total is an estimate)
    # too late to stop once committed: a cancel now leaves the snapshot and its result
    with suppress(JobCancelled, JobTimedOut):
        ctx.progress(1.0, summarize(snapshot))
    return {"snapshot": {k: v for k, v in snapshot.items() if k != "manifest"}}


@job_kind(VERIFY, "Verify a snapshot of the backup repository.", PERMISSION)
def backup_verify(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from sctk.backup.verify import verify_backup

    unknown = sorted(set(params) - {"snapshot", "read_data"})
    if unknown:
        raise SctkError(f"backup.verify does not know the parameter(s) {', '.join(unknown)}.")
    result = verify_backup(
        _runtime(ctx),
        str(params.get("snapshot") or "latest"),
        read_data=bool(params.get("read_data")),
        actor=_owner(ctx),
    )
    ctx.log(result["message"])
    if not result["ok"]:
        raise SctkError(result["message"])
    return result
