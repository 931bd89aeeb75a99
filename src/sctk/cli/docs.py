"""`sctk docs build [--check]`: regenerate the configuration and API references."""

from __future__ import annotations

from pathlib import Path

import typer

from sctk.cli.common import console

app = typer.Typer(help="Generated documentation.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Generated documentation."""


@app.command("build")
def build(
    out: Path = typer.Option(Path("docs"), "--out", help="Directory of the generated files."),
    check: bool = typer.Option(False, "--check", help="Only report stale files; exit 1 if any."),
) -> None:
    """Write docs/configuration.md and docs/api.md from the code."""
    from sctk import docs_build
    from sctk.errors import SctkError

    if check:
        stale = docs_build.stale(out)
        if stale:
            console.print(f"stale: {', '.join(stale)}; run 'sctk docs build'", highlight=False)
            raise typer.Exit(1)
        console.print("generated documentation is up to date")
        return
    if not out.is_dir():
        raise SctkError(f"{out} is not a directory; run from the repository or pass --out DIR.")
    written = docs_build.build(out)
    console.print(
        f"wrote {', '.join(str(p) for p in written)}" if written else "already up to date",
        highlight=False,
    )
