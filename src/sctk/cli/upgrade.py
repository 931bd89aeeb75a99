"""`sctk upgrade [--to REV]` with automatic rollback, and `sctk rollback [ID]`."""

from __future__ import annotations

import typer

from sctk.cli.common import (
    console,
    coordinate_option,
    json_option,
    operator,
    print_json,
    runtime,
    settings,
)


def upgrade(
    ctx: typer.Context,
    to: str = typer.Option("head", "--to", help="Target revision (default: the newest)."),
    yes: bool = typer.Option(
        False, "--yes", help="Answer yes for automation (a major upgrade's checklist)."
    ),
    coordinate: bool = coordinate_option(),
    as_json: bool = json_option(),
) -> None:
    """Back up, migrate, validate; on any failure restore the pre-update backup by itself."""
    from sctk import runstate
    from sctk.ops import upgrade as up

    def confirm(plan: up.UpgradePlan) -> bool:
        if yes:
            return True
        console.print(
            f"Revision(s) {', '.join(plan.major)} cannot be downgraded: this is a major "
            "upgrade. The maintenance guide's checklist:"
        )
        for item in up.CHECKLIST:
            console.print(f"  - {item}")
        return typer.confirm("Have all of these been done?", default=False)

    s = settings(ctx)
    with runstate.coordinated(s.home, "the upgrade", coordinate):
        result = up.upgrade(runtime(ctx), to, actor=operator(), confirm=confirm)
    if as_json:
        print_json(result.as_dict())
    else:
        console.print(result.message, style=None if result.ok else "red", highlight=False)
    raise typer.Exit(0 if result.ok else 1)


def rollback(
    ctx: typer.Context,
    snapshot: str | None = typer.Argument(None, help="A pre-update snapshot (default: newest)."),
    yes: bool = typer.Option(False, "--yes", help="Roll back without asking (automation)."),
    coordinate: bool = coordinate_option(),
    as_json: bool = json_option(),
) -> None:
    """Restore the state before the last upgrade (its pre-update backup)."""
    from sctk import runstate
    from sctk.errors import SctkError
    from sctk.ops import upgrade as up

    s = settings(ctx)
    if not coordinate:
        runstate.refuse_while_serving(s.home, "the rollback")  # before asking, not after
    snap = up.rollback_target(s, snapshot)
    if not yes and not typer.confirm(
        f"Replace the data directory and database with pre-update snapshot {snap.id[:8]} of "
        f"{snap.time:%Y-%m-%d %H:%M} UTC? Whatever changed since is lost.",
        default=False,
    ):
        raise SctkError("Rollback not confirmed; nothing was changed (pass --yes to automate).")
    with runstate.coordinated(s.home, "the rollback", coordinate):
        done = up.rollback(runtime(ctx), snap.id, actor=operator())
    if as_json:
        print_json(done)
    else:
        console.print(
            f"rolled back to pre-update snapshot {done['snapshot'][:8]} of {done['time']}",
            highlight=False,
        )
