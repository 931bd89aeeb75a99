"""Who may cancel or retry a job: its owner or an admin, and always with the kind's own
permission (an analyst may not retry an admin-only kind, even one they once submitted)."""

from __future__ import annotations

from sctk.errors import SctkError
from sctk.jobs.kinds import get_kind
from sctk.security.roles import allowed
from sctk.storage.models import Job

MANAGE_ANY = "jobs.manage"


def refusal(job: Job, username: str, role: str, action: str) -> tuple[str, str] | None:
    """(the permission USERNAME with ROLE lacks, one sentence) to ACTION JOB; None if allowed.

    The kind's permission comes first: without it not even the owner may act on the job.
    A kind this installation no longer has is left to those holding jobs.manage.
    """
    try:
        needed = get_kind(job.kind).permission
    except SctkError:
        needed = MANAGE_ANY
    if not allowed(role, needed):
        return needed, (
            f"Your role '{role}' may not {action} job {job.id}: '{job.kind}' jobs need "
            f"'{needed}'; ask an admin."
        )
    if job.owner != username and not allowed(role, MANAGE_ANY):
        return MANAGE_ANY, (
            f"Job {job.id} belongs to {job.owner}; your role '{role}' may {action} only your "
            f"own jobs, and another's needs '{MANAGE_ANY}' (ask them or an admin)."
        )
    return None
