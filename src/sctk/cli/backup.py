"""`sctk backup init|create|list|verify|prune|copy|repair|passphrase|upgrade`: the backup
repository of a data directory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from sctk.cli.common import (
    console,
    err_console,
    json_option,
    operator,
    print_json,
    runtime,
    settings,
    table,
)
from sctk.errors import SctkError

app = typer.Typer(help="Encrypted, deduplicated, verifiable backups of the data directory.")

REPO_OPTION = typer.Option(
    None, "--repo", help="Repository path or URL (default: backup.repository, else <home>/backups)."
)


@app.callback(no_args_is_help=True)
def _root() -> None:
    """Encrypted, deduplicated, verifiable backups of the data directory."""


@contextmanager
def _byte_bar(title: str, enabled: bool) -> Iterator[Any]:
    """A rich progress bar in bytes; yields update(done, total)."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    if enabled and not err_console.is_terminal:
        # off a terminal (a pipe, a log file, cron) a bar draws nothing: a line now and then
        from sctk.cli.progress import Ticker

        ticker = Ticker(title, err_console)

        def tick(done: int, total: int | None = None) -> None:
            of = f" of {_size(total)}" if total else ""
            ticker.tick(f"{_size(done)}{of}")

        yield tick
        return
    with Progress(*columns, console=err_console, transient=True, disable=not enabled) as bar:
        task = bar.add_task(title, total=None)

        def update(done: int, total: int | None = None) -> None:
            if total:
                bar.update(task, completed=done, total=max(total, done))
            else:
                bar.update(task, completed=done)

        yield update


# What the engine's phases count (repo/phases.py): files unless named here.
PHASE_UNITS = {"reading": "bytes", "planning": "packs", "repacking": "packs"}
PHASE_UNITS |= {"forgetting": "snapshots", "converting": "snapshots", "index": ""}


@contextmanager
def _phase_bar(title: str, enabled: bool) -> Iterator[Any]:
    """Progress of an engine step's phases (prune, verify, upgrade) on stderr: a bar on a
    terminal, a line every few seconds off one; yields phase(name, done, total)."""
    from sctk.cli.progress import progress

    with progress(title, err_console, enabled=enabled) as update:

        def phase(name: str, done: int, total: int | None) -> None:
            unit = PHASE_UNITS.get(name, "files")
            if unit == "bytes":
                text = f"{name} {_size(done)}" + (f" of {_size(total)}" if total else "")
            elif not unit:
                text = name
            else:
                text = f"{name} {done:,}" + (f"/{total:,}" if total is not None else "")
                text += f" {unit}"
            update(done / total if total else 0.0, text)

        yield phase


def _size(n: int | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def _say(result: dict, as_json: bool) -> None:
    """A step's report: JSON, or its one-sentence message; exit 1 when it did not succeed."""
    if as_json:
        print_json(result)
    else:
        console.print(result["message"], highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("init")
def init(
    ctx: typer.Context,
    repo: str | None = typer.Argument(
        None, help="Where to create it (default: backup.repository, else <home>/backups)."
    ),
    as_json: bool = json_option(),
) -> None:
    """Create an empty, encrypted repository (passphrase: SCTK_BACKUP_PASSPHRASE or
    backup.passphrase_file)."""
    from sctk.backup.admin import create_repo

    created = create_repo(runtime(ctx), repo, actor=operator())
    if as_json:
        print_json({"repository": created, "created": True})
    else:
        console.print(f"Created the backup repository at {created}.", highlight=False)


@app.command("create")
def create(
    ctx: typer.Context,
    label: str = typer.Option(
        "manual", "--label", help="daily, weekly, monthly, pre-update or manual."
    ),
    as_json: bool = json_option(),
) -> None:
    """Back up the database (a consistent copy, while the service runs), the configuration,
    the keyring and the data directories into the repository."""
    from sctk.backup.create import check_label, create_backup
    from sctk.storage.layout import require_data_dir

    rt = runtime(ctx)
    require_data_dir(rt.settings)
    check_label(label)
    with _byte_bar("backing up", enabled=not as_json) as update:
        snap = create_backup(rt, label, actor=operator(), progress=update)
    if as_json:
        print_json(snap)
        return
    console.print(
        f"Snapshot {snap['short_id']} ({label}): {snap['files']} files, {_size(snap['size'])}, "
        f"{_size(snap['added_bytes'])} new in the repository.",
        highlight=False,
    )


@app.command("list")
def list_cmd(ctx: typer.Context, repo: str | None = REPO_OPTION, as_json: bool = json_option()):
    """The snapshots, read from the repository itself (works without the database)."""
    from sctk.backup import catalog
    from sctk.backup.location import open_repo

    s = settings(ctx)
    repository = open_repo(s, repo)
    snaps = catalog.list_snapshots(repository)
    if repo is None:  # the cache mirrors the configured repository only
        problem = catalog.try_refresh(runtime(ctx), repository)
        if problem and not as_json:
            err_console.print(
                f"Note: the database's copy of this list was not updated ({problem}).",
                highlight=False,
            )
    unreadable = repository.unreadable_snapshots()
    if as_json:
        print_json(snaps)
        _name_unreadable(unreadable)
        return
    table(
        f"snapshots in {repository.url}",
        ["id", "time", "label", "kind", "status", "host", "files", "size", "added", "verified"],
        [
            [
                x["short_id"],
                x["time"][:19].replace("T", " "),
                x["label"],
                x["kind"],
                x["status"],
                x["host"],
                x["files"],
                _size(x["size"]),
                _size(x["added_bytes"]),
                (x["verified_at"] or "")[:19].replace("T", " "),
            ]
            for x in snaps
        ],
    )
    _name_unreadable(unreadable)


def _name_unreadable(unreadable: dict[str, str]) -> None:
    """Damaged snapshot files are named (never silently left out), and the exit is 1."""
    if not unreadable:
        return
    for snap_id, why in sorted(unreadable.items()):
        err_console.print(f"Snapshot {snap_id[:12]} cannot be read: {why}", highlight=False)
    err_console.print(
        f"{len(unreadable)} snapshot file(s) are damaged; restore them from a copy of the "
        "repository (`sctk backup copy` made one) or forget them.",
        highlight=False,
    )
    raise typer.Exit(1)


@app.command("verify")
def verify(
    ctx: typer.Context,
    snapshot: str | None = typer.Argument(
        None, help="A snapshot id (or unique prefix); default: the whole repository."
    ),
    latest: bool = typer.Option(
        False, "--latest", help="Verify the newest regular backup (not a safety snapshot)."
    ),
    include_safety: bool = typer.Option(
        False, "--include-safety", help="Let --latest pick a safety snapshot too."
    ),
    read_data: bool = typer.Option(
        False, "--read-data", help="Decrypt and authenticate every chunk, check every file."
    ),
    restore_test: bool = typer.Option(
        False, "--restore-test", help="Also load the database into a scratch database."
    ),
    repo: str | None = REPO_OPTION,
    as_json: bool = json_option(),
) -> None:
    """Check the repository's structure (and with --read-data every byte); record the result."""
    from sctk.backup.verify import verify_backup

    if snapshot and latest:
        raise SctkError("Give a snapshot id or --latest, not both.")
    ref = "latest" if latest else snapshot
    with _phase_bar("verifying", enabled=not as_json) as phase:
        result = verify_backup(
            runtime(ctx),
            ref,
            read_data=read_data,
            restore_test=restore_test,
            actor=operator(),
            url=repo,
            include_safety=include_safety,
            phase=phase,
        )
    if as_json:
        print_json(result)
    else:
        console.print(result["message"], highlight=False)
        for error in result["check"]["errors"][:20]:
            err_console.print(f"  {error}", highlight=False)
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("repair")
def repair(
    ctx: typer.Context,
    read_data: bool = typer.Option(
        False,
        "--read-data",
        help="Authenticate every chunk first, and drop the damaged ones (reads every pack).",
    ),
    repo: str | None = REPO_OPTION,
    as_json: bool = json_option(),
) -> None:
    """Rebuild the index from the packs (damaged chunks dropped, partial files removed) and
    report what no snapshot can restore any more; exit 1 when something is lost."""
    from sctk.backup.repair import repair_backup

    result = repair_backup(runtime(ctx), read_data=read_data, actor=operator(), url=repo)
    if as_json:
        print_json(result)
    else:
        console.print(result["message"], highlight=False)
        for snap_id, why in sorted(result["damaged_snapshots"].items()):
            err_console.print(f"  snapshot {snap_id[:12]}: {why}", highlight=False)
        for name in result["unreadable_packs"]:
            err_console.print(f"  pack {name}: its header cannot be read", highlight=False)
        for d in result["damaged_files"][:20]:
            err_console.print(
                f"  snapshot {d['snapshot'][:12]}: {d['path']} cannot be restored",
                highlight=False,
            )
        for d in result["lost"][:20]:
            err_console.print(
                f"  lost: {d['path']} (sha256 {d['sha256'][:12]}): no snapshot can restore it",
                highlight=False,
            )
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("passphrase")
def change_passphrase(
    ctx: typer.Context,
    new_from: str = typer.Option(
        ...,
        "--new-from",
        help="Where the new passphrase is: a file (its first line), or - for standard input.",
    ),
    repo: str | None = REPO_OPTION,
    as_json: bool = json_option(),
) -> None:
    """Change the repository's passphrase (at least 12 characters; the current one opens
    it). The key is re-wrapped with argon2id; the data is not rewritten."""
    from sctk.backup import passphrase
    from sctk.backup.admin import change_passphrase

    new = passphrase.read_new(new_from)
    where = change_passphrase(runtime(ctx), new, repo, actor=operator())
    if as_json:
        print_json({"repository": where, "changed": True})
        return
    console.print(
        f"Changed the passphrase of {where}; set SCTK_BACKUP_PASSPHRASE or "
        "backup.passphrase_file to the new one now, or backups will fail to open it.",
        highlight=False,
    )


@app.command("prune")
def prune(
    ctx: typer.Context,
    keep_last: int | None = typer.Option(None, "--keep-last", help="Keep the newest N."),
    keep_daily: int | None = typer.Option(None, "--keep-daily", help="Keep one for N days."),
    keep_weekly: int | None = typer.Option(None, "--keep-weekly", help="One for N weeks."),
    keep_monthly: int | None = typer.Option(None, "--keep-monthly", help="One for N months."),
    keep_within: float | None = typer.Option(
        None, "--keep-within", help="Keep every snapshot younger than DAYS."
    ),
    safety_keep_last: int | None = typer.Option(
        None, "--safety-keep-last", help="Keep the newest N safety snapshots (default 3)."
    ),
    safety_keep_within: float | None = typer.Option(
        None, "--safety-keep-within", help="Keep safety snapshots younger than DAYS (default 7)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would go; change nothing."),
    repo: str | None = REPO_OPTION,
    as_json: bool = json_option(),
) -> None:
    """Forget snapshots outside the retention policy (defaults: backup.keep_*), then remove
    the chunks no snapshot uses. The --keep-* rules count regular backups only; safety
    snapshots (taken before a restore or an upgrade) have their own (--safety-keep-*)."""
    from sctk.backup.prune_run import prune_backups

    with _phase_bar("pruning", enabled=not as_json) as phase:
        result = prune_backups(
            runtime(ctx),
            dry_run=dry_run,
            actor=operator(),
            url=repo,
            phase=phase,
            keep_last=keep_last,
            keep_daily=keep_daily,
            keep_weekly=keep_weekly,
            keep_monthly=keep_monthly,
            keep_within_days=keep_within,
            safety_keep_last=safety_keep_last,
            safety_keep_within_days=safety_keep_within,
        )
    if as_json:
        print_json(result)
        return

    def row(x: dict, action: str) -> list:
        when = (x["time"] or "")[:19].replace("T", " ")
        return [x["id"][:8], when, x["label"], x["kind"] or "", action, x.get("reason", "")]

    rows = [row(x, "keep") for x in result["kept"]] + [row(x, "remove") for x in result["removed"]]
    table(
        "retention" + (" (dry run)" if dry_run else ""),
        ["id", "time", "label", "kind", "", "reason"],
        rows,
    )
    console.print(result["message"], highlight=False)


@app.command("upgrade")
def upgrade(
    ctx: typer.Context, repo: str | None = REPO_OPTION, as_json: bool = json_option()
) -> None:
    """Move the repository to the current format (version 2: snapshot file lists stored in
    pieces, so listing, backing up and pruning many files need little memory). Snapshot
    files are rewritten with new ids; the data is untouched. Safe to interrupt and rerun;
    older sctk cannot open the repository afterwards."""
    from sctk.backup.upgrade_format import upgrade_repository

    with _phase_bar("upgrading", enabled=not as_json) as phase:
        result = upgrade_repository(runtime(ctx), actor=operator(), url=repo, phase=phase)
    _say(result, as_json)


@app.command("copy")
def copy(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", help="Destination: a directory or sftp:// or s3:// URL."),
    repo: str | None = REPO_OPTION,
    as_json: bool = json_option(),
) -> None:
    """Copy what the destination lacks (verifying each file), then check the copy."""
    from sctk.backup.offsite_copy import copy_backups

    with _byte_bar("copying", enabled=not as_json) as update:
        result = copy_backups(runtime(ctx), to, actor=operator(), progress=update, url=repo)
    _say(result, as_json)
