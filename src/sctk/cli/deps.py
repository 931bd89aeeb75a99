"""`sctk deps check` and `sctk deps upgrade`: sctk's dependencies, reported and upgraded."""

from __future__ import annotations

import typer

from sctk.cli.common import console, err_console, json_option, print_json, table
from sctk.errors import SctkError

app = typer.Typer(
    help="sctk's dependencies: what is outdated or has advisories, and upgrading them.",
    no_args_is_help=True,
)


@app.callback()
def _root() -> None:
    """sctk's dependencies: what is outdated or has advisories, and upgrading them."""


@app.command("check")
def check(as_json: bool = json_option()) -> None:
    """Compare installed versions with the package index; exit 1 when advisories are known."""
    from sctk.ops import dependency_report

    # each step may take a minute: say it (on stderr, so --json stays a document)
    report = dependency_report.check(
        say=lambda line: err_console.print(line, highlight=False, markup=False)
    )
    if as_json:
        print_json(report.as_dict())
    else:
        if report.outdated:
            table(
                None,
                ["package", "installed", "latest"],
                [[r["name"], r["installed"], r["latest"]] for r in report.outdated],
            )
        if report.upgrades:
            table(
                "deps upgrade would take",
                ["package", "installed", "to"],
                [[u["name"], u["installed"], u["to"]] for u in report.upgrades],
            )
        if report.held:
            table(
                "held back",
                ["package", "installed", "newest", "held back by"],
                [[h["name"], h["installed"], h["latest"], h["why"]] for h in report.held],
            )
        if report.advisories:
            table(
                None,
                ["package", "version", "advisory", "fixed in"],
                [
                    [a["name"], a["version"], str(a["id"]), ", ".join(a["fix"] or [])]
                    for a in report.advisories
                ],
            )
        if report.reachable and not report.outdated:
            console.print(f"all {len(report.installed)} dependencies are up to date")
        for note in report.notes:
            console.print(note, highlight=False)
    raise typer.Exit(1 if report.advisories else 0)


@app.command("upgrade")
def upgrade(
    ctx: typer.Context,
    group: str = typer.Option(
        "all", "--group", help="Upgrade only this group: scientific, web, ml or all."
    ),
    only: list[str] = typer.Option(
        None, "--only", help="Upgrade only this package (repeatable); one of sctk's own."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before upgrading."),
    force: bool = typer.Option(
        False, "--force", help="Upgrade even while an sctk service runs on the data directory."
    ),
    find_links: list[str] = typer.Option(
        None,
        "--find-links",
        help="A directory (or page) of wheels for pip (repeatable); alone, pip works offline.",
    ),
    index_url: str | None = typer.Option(None, "--index-url", help="The package index for pip."),
    as_json: bool = json_option(),
) -> None:
    """Upgrade sctk's packages within its ranges, test them, and roll back on any failure.

    Saves the installed set under <home>/archive/deps/, upgrades group by group (scientific,
    web, ml), runs an import check and 'sctk selftest --quick' after each, and reinstalls the
    saved set when any step fails. Exit 0 when upgraded (or nothing to do), 1 when rolled back.
    """
    from sctk.cli.common import operator, runtime
    from sctk.ops import dependency_upgrade

    if as_json and not (yes or dry_run):
        raise SctkError("--json cannot ask before upgrading; add --yes (or --dry-run).")

    def confirm(plan: dependency_upgrade.Plan) -> bool:
        if as_json:
            return True
        _show_plan(plan)
        return yes or typer.confirm(f"Upgrade {len(plan.upgrades)} package(s)?", default=False)

    source = dependency_upgrade.Source(list(find_links or []), index_url)
    result = dependency_upgrade.upgrade(
        runtime(ctx),
        source,
        group=group,
        only=only or None,
        dry_run=dry_run,
        force=force,
        confirm=confirm,
        actor=operator(),
    )
    if as_json:
        print_json(result.as_dict())
    else:
        if dry_run or not result.plan["upgrades"]:
            _show_plan(dependency_upgrade.Plan(**_plan_parts(result.plan)))
        console.print(result.message, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if result.ok else 1)


def _plan_parts(data: dict) -> dict:
    from sctk.ops.dependency_upgrade import Held, Planned

    return {
        "upgrades": [Planned(**p) for p in data["upgrades"]],
        "held": [Held(**h) for h in data["held"]],
        "candidates": data["candidates"],
    }


def _show_plan(plan) -> None:
    if plan.upgrades:
        table(
            "planned upgrades",
            ["group", "package", "installed", "to", "note"],
            [[p.group, p.name, p.installed or "-", p.version, p.reason] for p in plan.upgrades],
        )
    if plan.held:
        table(
            "held back",
            ["package", "installed", "newest", "held back by"],
            [[h.name, h.installed, h.latest, h.why] for h in plan.held],
        )
