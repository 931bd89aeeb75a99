"""`sctk compliance` (formerly `sctk audit`): the compliance audit, scored, written to reports/
and kept in a history."""

from __future__ import annotations

import typer
from rich.markup import escape

from sctk.cli.common import console, print_json, runtime, settings, table

STYLE = {"pass": "green", "fail": "red", "n/a": "dim"}


def compliance(
    ctx: typer.Context,
    fmt: str = typer.Option("table", "--format", help="table, json, md or html."),
    min_score: float | None = typer.Option(
        None, "--min-score", help="Exit 1 when the score is below this (0..100)."
    ),
    show_history: bool = typer.Option(False, "--history", help="Show past scores instead."),
) -> None:
    """Run the compliance audit; the report file goes to <data dir>/reports/."""
    from sctk.errors import SctkError
    from sctk.ops import compliance

    if fmt not in compliance.FORMATS:
        raise SctkError(f"Unknown format '{fmt}'; use one of {', '.join(compliance.FORMATS)}.")
    if min_score is not None and not 0 <= min_score <= 100:
        raise SctkError(f"--min-score must lie between 0 and 100; got {min_score:g}.")
    s = settings(ctx)
    if show_history:
        rows = compliance.history(runtime(ctx))
        if fmt == "json":
            print_json(rows)
        else:
            table(
                None,
                ["at", "score", "summary"],
                [[r["at"][:19], f"{r['score']:g}", escape(r["summary"])] for r in rows],
            )
        return
    report = compliance.run_audit(runtime(ctx))
    path = compliance.save(s, report, fmt)
    compliance.record(runtime(ctx), report, path)
    if fmt == "table":
        table(
            None,
            ["group", "check", "weight", "status", "evidence", "fix"],
            [
                [
                    c.group,
                    c.name,
                    str(c.weight),
                    f"[{STYLE[c.status]}]{c.status}[/]",
                    escape(c.evidence),
                    escape(c.fix),
                ]
                for c in report.checks
            ],
        )
        console.print(f"score: {report.score:g} / 100; report written to {path}", highlight=False)
    else:
        text = compliance.render(report, fmt)
        typer.echo(text, nl=not text.endswith("\n"))
    if min_score is not None and report.score < min_score:
        typer.echo(f"score {report.score:g} is below --min-score {min_score:g}", err=True)
        raise typer.Exit(1)
