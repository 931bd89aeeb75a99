"""`sctk restore`: list, extract or restore (fully or in part) a snapshot of the data directory."""

from __future__ import annotations

from pathlib import Path

import typer

from sctk.cli.common import (
    console,
    coordinate_option,
    err_console,
    operator,
    print_json,
    runtime,
    settings,
    table,
)
from sctk.errors import SctkError


def _size(n: int) -> str:
    from sctk.cli.backup import _size as size

    return size(n)


def restore(
    ctx: typer.Context,
    snapshot: str | None = typer.Argument(None, help="Snapshot id (or a unique prefix)."),
    latest: bool = typer.Option(
        False, "--latest", help="Use the newest regular backup (not a safety snapshot)."
    ),
    include_safety: bool = typer.Option(
        False,
        "--include-safety",
        help="Let --latest pick a safety snapshot (taken before a restore or an upgrade) too.",
    ),
    only: list[str] = typer.Option(
        [], "--only", help="Restore only this part: db, data, config or keys (repeatable)."
    ),
    file: str | None = typer.Option(
        None, "--file", help="Extract this one file of the snapshot (into --target or here)."
    ),
    list_files: bool = typer.Option(False, "--list", help="List the snapshot's files."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be restored and replaced; change nothing."
    ),
    target: Path | None = typer.Option(
        None, "--target", help="Restore into this directory (default: the data directory)."
    ),
    database_url: str | None = typer.Option(
        None,
        "--database-url",
        help="PostgreSQL database to load a PostgreSQL snapshot into (default: the target's).",
    ),
    repo: str | None = typer.Option(
        None, "--repo", help="Repository path or URL (default: backup.repository)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Restore even while a service runs on the target; overwrite --file."
    ),
    coordinate: bool = coordinate_option(),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Restore a snapshot: everything, or only some parts, into the data directory (or a fresh
    --target), after a safety backup, through a staging directory swapped in atomically."""
    from sctk.backup import restore_run as rs
    from sctk.backup.location import open_repo

    if latest and snapshot:
        raise SctkError("Give either a snapshot id or --latest, not both.")
    if not latest and not snapshot:
        raise SctkError(
            "Name the snapshot to restore: its id (see 'sctk backup list') or --latest."
        )
    ref = "latest" if latest else str(snapshot)
    parts = rs.parse_parts(only)
    if file and list_files:
        raise SctkError("Use --file or --list, not both.")
    s = settings(ctx)
    repository = open_repo(s, repo)

    if list_files:
        _list_files(repository, ref, parts if only else None, include_safety, as_json)
        return
    if file:
        dest_dir = (target or Path.cwd()).expanduser()
        _extract_one(repository, ref, file, dest_dir, dry_run, force, include_safety, as_json)
        return

    plan = rs.make_plan(
        s,
        repository,
        ref,
        parts,
        target,
        database_url,
        explicit_parts=bool(only),
        force=force,
        include_safety=include_safety,
    )
    if dry_run:
        _print_plan(plan, as_json)
        return
    from sctk import runstate
    from sctk.cli.backup import _byte_bar

    with (
        runstate.coordinated(plan.target, "the restore", coordinate),
        _byte_bar("restoring", enabled=not as_json) as update,
    ):
        result = rs.restore(
            runtime(ctx),
            repository,
            ref,
            parts,
            target=target,
            database_url=database_url,
            force=force,
            explicit_parts=bool(only),
            progress=lambda done: update(done, plan.bytes),
            actor=operator(),
            include_safety=include_safety,
        )
    if as_json:
        print_json(result.as_dict())
        _exit_if_damaged(result, quiet=True)
        return
    _print_result(result, plan)
    _exit_if_damaged(result)


def _list_files(repository, ref: str, parts, include_safety: bool, as_json: bool) -> None:
    """The snapshot's files (of PARTS only, when given)."""
    from sctk.backup import restore_run as rs

    info, rows = rs.list_files(repository, ref, include_safety)
    rows = [r for r in rows if parts is None or r["part"] in parts]
    if as_json:
        print_json({"snapshot": info.id, "files": rows})
        return
    table(
        f"Snapshot {info.id[:12]} ({info.label}, {info.time:%Y-%m-%d %H:%M} UTC)",
        ["path", "size", "part"],
        [[r["path"], r["size"], r["part"]] for r in rows],
    )


def _extract_one(
    repository, ref: str, file: str, dest_dir: Path, dry_run: bool, force: bool,
    include_safety: bool, as_json: bool,
) -> None:  # fmt: skip
    """`--file`: one file of the snapshot into DEST_DIR (or what that would do)."""
    from sctk.backup import kinds
    from sctk.backup import restore_run as rs

    if dry_run:
        info = kinds.find(repository, ref, include_safety)
        entry = repository.snapshot_lookup(info.id).get(file)  # one piece of the list read
        if entry is None:
            raise SctkError(
                f"{file} is not in snapshot {info.id[:12]}; "
                "'sctk restore ID --list' shows its files."
            )
        dest = dest_dir / Path(file).name
        _say(
            as_json,
            {"dry_run": True, "file": file, "to": str(dest), "size": entry["size"]},
            f"Would write {file} ({_size(entry['size'])}) to {dest}.",
        )
        return
    dest = rs.extract_file(
        repository, ref, file, dest_dir, force=force, include_safety=include_safety
    )
    _say(
        as_json,
        {"file": file, "to": str(dest), "size": dest.stat().st_size},
        f"Restored {file} to {dest} ({_size(dest.stat().st_size)}).",
    )


def _print_result(result, plan) -> None:
    """What a whole or partial restore did, as text."""
    if result.recovered:
        console.print(f"An interrupted restore was {result.recovered} first.", highlight=False)
        if plan.pending_snapshot:
            console.print(
                f"It was restoring snapshot {plan.pending_snapshot[:12]}; this run settled that "
                "snapshot.",
                highlight=False,
            )
    if result.safety_snapshot:
        console.print(
            f"Safety backup taken first: snapshot {result.safety_snapshot[:12]}.", highlight=False
        )
    console.print(
        f"Restored snapshot {result.snapshot[:12]} ({', '.join(result.parts)}) into "
        f"{result.target}: {result.files} files, {_size(result.bytes)}, {result.seconds:.1f} s.",
        highlight=False,
    )
    if result.revision_before and result.revision_before != result.revision_after:
        console.print(
            f"Schema migrated from {result.revision_before} to {result.revision_after}.",
            highlight=False,
        )
    if result.health:
        table(
            f"Health after restore: {result.health['status']}",
            ["check", "status", "message"],
            [[c["name"], c["status"], c["message"]] for c in result.health["checks"]],
        )


def _exit_if_damaged(result, quiet: bool = False) -> None:
    """A partial restore (into a fresh --target) names what it left out and exits 1."""
    if not result.damaged:
        return
    if not quiet:
        err_console.print(
            f"{len(result.damaged)} damaged file(s) of snapshot {result.snapshot[:12]} were "
            f"not restored (every other file was); run `sctk backup verify --read-data`, then "
            "restore them from another snapshot:",
            highlight=False,
        )
        for d in result.damaged:
            err_console.print(f"  {d['path']}: {d['reason']}", highlight=False)
    raise typer.Exit(1)


def _say(as_json: bool, data: dict, text: str) -> None:
    if as_json:
        print_json(data)
    else:
        console.print(text, highlight=False)


def _print_plan(plan, as_json: bool) -> None:
    if as_json:
        print_json({"dry_run": True, **plan.as_dict()})
        return
    console.print(
        f"Dry run: would restore snapshot {plan.snapshot[:12]} ({plan.label}, "
        f"{plan.created_at}) into {plan.target}; nothing was changed.",
        highlight=False,
    )
    if plan.running_pid is not None:
        err_console.print(
            f"A service (pid {plan.running_pid}) runs on {plan.target}: the restore would "
            "refuse without --coordinate or --force.",
            highlight=False,
        )
    if plan.interrupted:
        console.print(
            "An interrupted restore would first be finished or undone (see its journal in "
            "tmp/restore)"
            + (
                f"; it was restoring snapshot {plan.pending_snapshot[:12]}."
                if plan.pending_snapshot
                else "."
            ),
            highlight=False,
        )
    if plan.safety_backup:
        console.print("A safety backup (label pre-update) would be taken first.", highlight=False)
    table(
        None,
        ["item", "part", "action", "files", "size"],
        [[i.name, i.part, i.action, i.files, _size(i.bytes)] for i in plan.items],
    )
    if plan.database:
        console.print(f"The database dump would be loaded into the {plan.database}.")
    if plan.migrate:
        console.print(
            f"The schema ({plan.schema_revision}) would then be migrated to the newest revision."
        )
