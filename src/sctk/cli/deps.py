"""`sctk deps check`: outdated and vulnerable packages among sctk's dependencies."""

from __future__ import annotations

import typer

from sctk.cli.common import console, err_console, json_option, print_json, table

app = typer.Typer(
    help="sctk's dependencies: what is outdated or has advisories.", no_args_is_help=True
)


@app.callback()
def _root() -> None:
    """sctk's dependencies: what is outdated or has advisories."""


@app.command("check")
def check(as_json: bool = json_option()) -> None:
    """Compare installed versions with the package index; exit 1 when advisories are known."""
    from sctk.ops import deps

    # each step may take a minute: say it (on stderr, so --json stays a document)
    report = deps.check(say=lambda line: err_console.print(line, highlight=False, markup=False))
    if as_json:
        print_json(report.as_dict())
    else:
        if report.outdated:
            table(
                None,
                ["package", "installed", "latest"],
                [[r["name"], r["installed"], r["latest"]] for r in report.outdated],
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
