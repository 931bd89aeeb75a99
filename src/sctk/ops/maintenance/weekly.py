"""Weekly maintenance: reindex, data integrity, key rotation."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import text

from sctk.ops import integrity
from sctk.ops.tasks import TaskContext, TaskResult, task
from sctk.storage.engine import session_scope, unbounded_statements


@task("reindex", "weekly", "PostgreSQL: REINDEX the database. SQLite: VACUUM (rebuilds the file).")
def reindex(ctx: TaskContext) -> TaskResult:
    engine = ctx.engine
    # rebuilding every index of a large database may rightly outlast any statement limit
    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        unbounded_statements(conn),
    ):
        if engine.dialect.name == "sqlite":
            before = conn.execute(text("PRAGMA page_count")).scalar()
            conn.execute(text("VACUUM"))
            after = conn.execute(text("PRAGMA page_count")).scalar()
            return TaskResult(
                "ok",
                f"VACUUM done: {before} -> {after} pages",
                {"pages_before": before, "pages_after": after},
            )
        # REINDEX DATABASE needs the database's owner; each table needs only its own
        tables = [
            r[0]
            for r in conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
            )
        ]
        for table in tables:
            conn.execute(text(f'REINDEX TABLE "{table}"'))
    return TaskResult("ok", f"reindexed {len(tables)} tables", {"tables": tables})


@task("integrity", "weekly", "Stored files against their recorded SHA-256; JSON parses; DB check.")
def data_integrity(ctx: TaskContext) -> TaskResult:
    with session_scope(ctx.engine) as s:
        report = integrity.check_files(s, ctx.settings.home)
    integrity.check_json(ctx.settings.home, report)
    db = integrity.database_problems(ctx.engine)
    details = {
        "files_checked": report.files_checked,
        "bytes_checked": report.bytes_checked,
        "problems": [p.sentence() for p in report.problems],
        "database": db,
    }
    if report.problems or db:
        named = [p.sentence() for p in report.problems] + [f"database: {d}" for d in db]
        return TaskResult("fail", f"{len(named)} problem(s): " + "; ".join(named[:5]), details)
    return TaskResult("ok", f"{report.files_checked} files and the database check out", details)


@task("key_rotation", "weekly", "Rotate the keyring when its newest key is older than the period.")
def key_rotation(ctx: TaskContext) -> TaskResult:
    from sctk.security import rotation

    period = ctx.settings.maintenance.key_max_age_days
    age = rotation.newest_key_age(ctx.settings).total_seconds() / 86400
    if age <= period:
        return TaskResult(
            "ok",
            f"newest key is {age:.0f} days old (rotation after {period:g})",
            {"age_days": round(age, 2)},
        )
    report = rotation.rotate(ctx.runtime, actor=ctx.actor)
    return TaskResult(
        "ok",
        f"rotated: the newest key was {age:.0f} days old; now key {report.new_key_id}",
        {"age_days": round(age, 2), "new_key_id": report.new_key_id},
    )


@task("dependencies", "weekly", "Outdated packages and known advisories among sctk's own.")
def dependencies(ctx: TaskContext) -> TaskResult:
    from sctk.ops import dependency_report

    report = dependency_report.check()
    if not report.reachable:
        return TaskResult("warn", "could not reach the package index", report.as_dict())
    summary = (
        f"{len(report.outdated)} outdated ({len(report.upgrades)} within sctk's ranges, "
        f"{len(report.held)} held back), {len(report.advisories)} with advisories"
    )
    status = "fail" if report.advisories else ("warn" if report.outdated else "ok")
    return TaskResult(status, "; ".join([summary, *report.notes]), report.as_dict())


@task(
    "quick_benchmark", "weekly", "Time a database round trip, a job, a prediction, the self-test."
)
def quick_benchmark(ctx: TaskContext) -> TaskResult:
    from sctk.ops import quickbench

    figures, notes = quickbench.measure(ctx.settings, ctx.engine)
    test = None
    if ctx.settings.maintenance.benchmark_selftest:
        from sctk.ops import selftest

        test = selftest.run_isolated(quick=True)
        figures["selftest_ms"] = round(test.seconds * 1000.0, 3)
        notes["selftest"] = test.sentence()
    previous = quickbench.previous(ctx.engine)
    slower = quickbench.regressions(figures, previous)
    summary = ", ".join(f"{k} {v:.2f} ms" for k, v in figures.items())
    details = {"figures": figures, "previous": previous, "notes": notes}
    if test is not None:
        details["selftest"] = [asdict(step) for step in test.steps]
        if not test.ok:  # the installed product is broken: the week's one finding that matters
            return TaskResult("fail", f"{test.sentence()}; {summary}", details)
    if "predict_1000_rows_ms" not in figures and notes.get("prediction"):
        # the model's failure is this task's finding (warn), not an error of the weekly group
        return TaskResult("warn", f"{notes['prediction']}; {summary}", details)
    if slower:
        return TaskResult(
            "warn",
            f"slower than last week: {', '.join(slower)}; {summary}",
            {**details, "slower": slower},
        )
    return TaskResult("ok", summary, details)
