"""`sctk backup copy --to URL`: an off-site mirror of the repository, then a check of it.

The engine copies only the files the destination lacks and verifies size and SHA-256 of each
after transfer; the destination is then opened with the same passphrase and its structure
checked, so a copy that reports success can be listed and restored from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from sctk.backup import passphrase, runs
from sctk.backup.create import reason
from sctk.backup.location import display, open_repo, remote_options, repo_url
from sctk.errors import SctkError

if TYPE_CHECKING:
    from sctk.runtime import Runtime


def copy_backups(
    rt: Runtime,
    dest_url: str,
    *,
    actor: str = "system",
    progress: Callable[[int], None] | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Copy the repository to DEST_URL and check the copy; the report as a dict."""
    from sctk.backup.repo import Repository

    if not dest_url or not dest_url.strip():
        raise SctkError("--to needs a destination: a directory or a URL (sftp://, s3://).")
    settings = rt.settings
    url = url or repo_url(settings)
    run = runs.start(rt, "copy", actor, url)
    repo = None
    try:
        repo = open_repo(settings, url)
        if dest_url.rstrip("/") == repo.url.rstrip("/"):
            raise SctkError("The destination is the repository itself; name another place.")
        options = remote_options(settings)
        report = repo.copy_to(dest_url, progress=progress, options=options)
        dest = Repository.open(dest_url, passphrase.resolve(settings), options)
        check = dest.check(read_data=False)
        snapshots = len(dest.snapshots())
    except BaseException as exc:
        why = reason(exc)
        runs.finish(run, False, why, details={"to": display(dest_url)}, repo=repo)
        if isinstance(exc, SctkError | OSError):
            raise SctkError(why) from None
        raise
    ok = bool(check.ok)
    if ok:
        message = (
            f"Copied {report.files_copied} file(s) ({report.bytes_copied} bytes, "
            f"{report.files_skipped} already there) to {display(dest_url)}; the copy holds "
            f"{snapshots} snapshot(s) and checks clean."
        )
    else:
        first = check.errors[0] if check.errors else "unknown error"
        message = f"The copy at {display(dest_url)} does not check clean: {first}"
    result = {
        "ok": ok,
        "to": display(dest_url),
        "copy": asdict(report),
        "check": asdict(check),
        "snapshots": snapshots,
        "message": message,
    }
    runs.finish(
        run, ok, message, details={k: v for k, v in result.items() if k != "message"}, repo=repo
    )
    return result
