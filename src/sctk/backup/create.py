"""`sctk backup create`: one snapshot of the data directory in the repository.

The database first (a consistent copy, see dbsnapshot), then the configuration, the keyring
and the data directories. Rows committed after the copy may refer to files added later: they
are simply not in this snapshot. Files written before a row commits are already on disk when
the copy is taken, so every row in the snapshot finds its file. Any part failing leaves the
writer without a commit: no snapshot, only orphan chunks that the next prune collects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sctk.backup import catalog, dbsnapshot, kinds, manifest, runs
from sctk.backup.location import local_path, open_repo, repo_url
from sctk.errors import SctkError

if TYPE_CHECKING:
    from sctk.runtime import Runtime

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (bytes done, bytes expected or None)


def check_label(label: str) -> str:
    if label not in manifest.LABELS:
        raise SctkError(
            f"Unknown backup label '{label[:40]}'; use one of {', '.join(manifest.LABELS)}."
        )
    return label


def reason(exc: BaseException) -> str:
    """One sentence for why a backup operation failed."""
    if isinstance(exc, SctkError):
        return exc.message
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or exc}{where}; check the path, its permissions and free space."
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted before the snapshot was committed; no snapshot was written."
    return f"{type(exc).__name__}: {exc}"


def _tree_size(root: Path) -> int:
    """Bytes of the regular files under ROOT (symlinks not followed): one lstat a file."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for item in it:
                    try:
                        if item.is_dir(follow_symlinks=False):
                            stack.append(item.path)
                        elif item.is_file(follow_symlinks=False):
                            total += item.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _excluder(home: Path, repository: str, top: str) -> Callable[[str], bool] | None:
    """Skip a repository that lives inside a backed-up directory (it would back itself up)."""
    path = local_path(repository)
    if path is None:
        return None
    try:
        inside = path.resolve().relative_to((home / top).resolve())
    except ValueError:
        return None
    prefix = inside.as_posix()

    def exclude(rel: str) -> bool:
        rel = rel.removeprefix(f"{top}/")
        return rel == prefix or rel.startswith(prefix + "/")

    return exclude


def take(rt: Runtime, repo: Any, label: str, progress: Progress | None = None) -> Any:
    """Write one snapshot of the runtime's data directory into REPO; its SnapshotInfo."""
    home = rt.settings.home
    # in path order, so the trees make one sorted file list whose pieces the next backup can
    # copy as stored (the database and config files are put in place at the commit)
    dirs = sorted(d for d in (manifest.KEYS_DIR, *manifest.DATA_DIRS) if (home / d).is_dir())
    config_file = home / manifest.CONFIG_FILE
    expected = {"files": 0, "db": 0}
    if progress is not None:  # a second walk of the tree, only to show a percentage
        expected["files"] = sum(_tree_size(home / d) for d in dirs)
        if config_file.is_file():
            expected["files"] += config_file.stat().st_size

    def total() -> int:
        return expected["files"] + expected["db"]

    def on_bytes(done: int) -> None:
        if progress is not None:
            progress(done, total())

    def on_db_size(size: int) -> None:
        expected["db"] = size

    with repo.writer(progress=on_bytes if progress is not None else None) as writer:
        db = dbsnapshot.add_database(rt, writer, on_db_size)
        paths = [db.path]
        if config_file.is_file():
            paths.append(writer.add_file(manifest.CONFIG_FILE, config_file).path)
        counts = manifest.count_parts(paths)
        for top in dirs:
            n = writer.add_tree(
                home / top, prefix=f"{top}/", exclude=_excluder(home, repo.url, top), collect=False
            )
            counts[manifest.part_of(f"{top}/-")] += n  # every file of a tree is of its part
        meta = manifest.build(
            backend=db.backend,
            schema_revision=db.schema_revision,
            tables=db.tables,
            label=label,
            files=counts,
        )
        return writer.commit(label, meta, host=manifest.host_name())


def create_backup(
    rt: Runtime,
    label: str = "manual",
    *,
    actor: str = "system",
    progress: Progress | None = None,
    url: str | None = None,
) -> dict[str, Any]:
    """Take a snapshot, record the run (audit, bus, catalog cache); the snapshot as a dict.

    Raises SctkError with the reason when any part fails; the failure is recorded first.
    """
    check_label(label)
    settings = rt.settings
    url = url or repo_url(settings)
    run = runs.start(rt, "create", actor, url)
    repo = None
    try:
        repo = open_repo(settings, url)
        info = take(rt, repo, label, progress)
    except BaseException as exc:
        why = reason(exc)
        runs.finish(run, False, why, details={"label": label}, repo=repo)
        if isinstance(exc, SctkError | OSError):
            raise SctkError(why) from None
        raise
    snapshot = catalog.snapshot_dict(info)
    summary = summarize(snapshot)
    runs.finish(
        run,
        True,
        summary,
        snapshot_id=info.id,
        details={
            "label": label,
            "files": info.files,
            "size": info.size,
            "added_bytes": info.added_bytes,
            "tables": info.manifest.get("tables", {}),
        },
        repo=repo,
    )
    if settings.backup.announce_success and kinds.kind_of(info) == kinds.REGULAR:
        _announce(rt, summary)
    return snapshot


def summarize(snapshot: dict[str, Any]) -> str:
    """One line on a snapshot taken (a snapshot_dict): its files and final size."""
    return (
        f"Snapshot {snapshot['short_id']} ({snapshot['label']}): {snapshot['files']} files, "
        f"{snapshot['size']} bytes, {snapshot['added_bytes']} bytes added."
    )


def _announce(rt: Runtime, summary: str) -> list[str]:
    """Tell the alert channels (backup.announce_success); the channels that took it. A
    notifier that fails is logged by the dispatcher: the backup itself stands."""
    from sctk.monitoring import notifiers

    note = notifiers.Notification(
        kind="report",
        title=f"backup succeeded on {manifest.host_name()}",
        severity="info",
        text=summary,
    )
    try:
        with rt.session() as s:
            attempts = notifiers.broadcast(note, rt.settings.alerts, s, rt.keyring, timeout=30)
    except Exception:  # the snapshot is committed and recorded either way
        log.warning("announcing the backup on the notifiers failed", exc_info=True)
        return []
    return [a.channel for a in attempts if a.ok]
