"""`sctk plugins list`: the plugins loaded and what each adds."""

from __future__ import annotations

import typer

from sctk.cli.common import json_option, print_json, table

app = typer.Typer(help="Plugins: sctk's domains and installed packages that add to it.")


@app.callback()
def _root() -> None:
    """Plugins: sctk's domains and installed packages that add to it."""


@app.command("list")
def list_(as_json: bool = json_option()) -> None:
    """Every plugin, its package, and the job kinds, checks, tasks, detectors and model
    kinds it adds; a plugin that failed to load is shown with its error."""
    from sctk.ops.plugin_report import describe

    views = describe()
    if as_json:
        print_json([v.to_dict() for v in views])
        return
    rows = []
    for v in views:
        adds = "; ".join(f"{what}: {', '.join(names)}" for what, names in v.adds.items())
        rows.append([v.name, v.package, "built in" if v.builtin else "installed", v.error or adds])
    table(None, ["plugin", "package", "kind", "adds"], rows)
