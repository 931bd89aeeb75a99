"""`sctk backup upgrade`: the engine's format upgrade (version 1 to 2), audited, with one
sentence of what it did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sctk.backup import runs
from sctk.backup.location import display, open_repo, repo_url

if TYPE_CHECKING:
    from sctk.runtime import Runtime


def upgrade_repository(
    rt: Runtime,
    *,
    actor: str = "system",
    url: str | None = None,
    phase: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Upgrade the repository's format; the report as a dict with "ok" and "message"."""
    url = url or repo_url(rt.settings)
    repo = open_repo(rt.settings, url)
    report = repo.upgrade(phase=phase)
    data = asdict(report)
    where = display(repo.url)
    if report.from_version == report.to_version and not report.converted:
        message = f"{where} already has format version {report.to_version}; nothing to do."
    else:
        message = (
            f"Upgraded {where} from format version {report.from_version} to "
            f"{report.to_version}: {len(report.converted)} snapshot file(s) rewritten "
            "(new snapshot ids; the data is untouched). sctk before format version "
            f"{report.to_version} can no longer open it."
        )
    if report.unreadable:
        message += (
            f" {len(report.unreadable)} damaged snapshot file(s) were left as they are; "
            "forget them or restore them from a copy, then run upgrade again."
        )
    data.update(ok=not report.unreadable, message=message, repository=where)
    runs.audit_only(
        rt,
        "backup.upgrade",
        actor,
        where,
        {
            "from_version": report.from_version,
            "to_version": report.to_version,
            "converted": len(report.converted),
            "unreadable": len(report.unreadable),
        },
    )
    return data
