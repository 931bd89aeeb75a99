"""`sctk doctor [startup|performance|data]`: troubleshooting findings with the fix for each."""

from __future__ import annotations

import typer
from rich.markup import escape

from sctk.cli.common import console, json_option, print_json, runtime, table

STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}
EXIT = {"ok": 0, "warn": 1, "fail": 2}


def doctor(
    ctx: typer.Context,
    areas: list[str] = typer.Argument(
        None, help="startup, performance and/or data (default: all three)."
    ),
    as_json: bool = json_option(),
    all_findings: bool = typer.Option(False, "--all", help="Show passing findings too."),
    selftest: bool = typer.Option(
        False,
        "--selftest",
        help="Also run 'sctk selftest --quick' (a scratch home; some seconds) with start-up.",
    ),
) -> None:
    """Diagnose start-up, performance and data problems; exit 0 fine, 1 warnings, 2 failures."""
    from sctk.ops.doctor import diagnose, worst

    findings = diagnose(runtime(ctx), areas or None, selftest=selftest)
    overall = worst(findings)
    if as_json:
        print_json({"status": overall, "findings": [f.as_dict() for f in findings]})
    else:
        shown = [f for f in findings if all_findings or f.severity != "ok"]
        if shown:
            table(
                None,
                ["", "area", "finding", "fix"],
                [
                    [
                        f"[{STYLE[f.severity]}]{f.severity}[/]",
                        f.area,
                        f"{f.name}: {escape(f.message)}",
                        escape(f.fix),
                    ]
                    for f in shown
                ],
            )
        passed = sum(f.severity == "ok" for f in findings)
        console.print(
            f"{len(findings) - passed} problem(s), {passed} check(s) passed; "
            f"overall: [{STYLE[overall]}]{overall}[/]"
        )
    raise typer.Exit(EXIT[overall])
