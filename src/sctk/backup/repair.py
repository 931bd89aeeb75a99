"""`sctk backup repair`: the engine's repair (index rebuilt from the packs, damaged chunks
dropped, partial files removed), audited, with one sentence of what it found."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sctk.backup import runs
from sctk.backup.location import display, open_repo, repo_url

if TYPE_CHECKING:
    from sctk.runtime import Runtime


def repair_backup(
    rt: Runtime, *, read_data: bool = False, actor: str = "system", url: str | None = None
) -> dict[str, Any]:
    """Repair the repository; the report as a dict with "ok" (nothing lost or damaged) and
    "message"."""
    url = url or repo_url(rt.settings)
    repo = open_repo(rt.settings, url)
    report = repo.repair(read_data=read_data)
    data = asdict(report)
    ok = not (report.damaged_snapshots or report.damaged_files or report.unreadable_packs)
    message = (
        f"Rebuilt the index of {display(repo.url)} from {report.packs} pack(s)"
        + (" (every chunk authenticated)" if read_data else "")
        + f"; {report.dropped_chunks} damaged chunk(s) dropped, "
        f"{report.removed_files} partial file(s) removed."
    )
    if ok:
        message += " Every snapshot can be restored."
    else:
        message += (
            f" {len(report.damaged_snapshots)} snapshot file(s) unreadable, "
            f"{len(report.damaged_files)} file(s) in snapshots damaged, "
            f"{len(report.lost)} file version(s) no snapshot can restore"
            + (
                "; the next backup stores again whatever it still finds on disk."
                if report.damaged_files
                else "."
            )
        )
    data.update(ok=ok, message=message, repository=display(repo.url), read_data=read_data)
    runs.audit_only(
        rt,
        "backup.repair",
        actor,
        display(repo.url),
        {k: data[k] for k in ("packs", "dropped_chunks", "removed_files", "ok", "read_data")}
        | {"lost": len(report.lost)},
    )
    return data
