"""Daily maintenance: health, database upkeep, logs, temporary files, results archiving."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text, update

from sctk import runstate
from sctk.health import Status, run_checks
from sctk.health.registry import record
from sctk.logs import LOG_FILE
from sctk.ops.maintenance.files import compress, old_files, remove
from sctk.ops.tasks import TaskContext, TaskResult, task
from sctk.runstate import PID_FILE
from sctk.storage.engine import session_scope, unbounded_statements
from sctk.storage.models import Dataset

MB = 1024 * 1024
COMPRESSED = ".zst"
SCRATCH = Path("tmp") / "scratch"


@task("health", "daily", "Run every health check and store the results.")
def health(ctx: TaskContext) -> TaskResult:
    report = run_checks(ctx.runtime)
    record(ctx.engine, report)
    bad = [o for o in report.outcomes if o.status is not Status.OK]
    status = {Status.OK: "ok", Status.WARNING: "warn"}.get(report.status, "fail")
    summary = (
        f"{len(report.outcomes)} checks OK"
        if not bad
        else "; ".join(f"{o.name} {o.status.name}: {o.message}" for o in bad)
    )
    return TaskResult(status, summary, {"checks": [o.as_dict() for o in report.outcomes]})


@task("database", "daily", "SQLite: quick_check, ANALYZE, optimize. PostgreSQL: VACUUM ANALYZE.")
def database(ctx: TaskContext) -> TaskResult:
    engine = ctx.engine
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            check = [r[0] for r in conn.execute(text("PRAGMA quick_check"))]
            conn.execute(text("ANALYZE"))
            conn.execute(text("PRAGMA optimize"))
            conn.commit()
        if check != ["ok"]:
            return TaskResult(
                "fail", f"quick_check found damage: {'; '.join(check[:3])}", {"quick_check": check}
            )
        return TaskResult("ok", "quick_check ok; statistics refreshed (ANALYZE, optimize)")
    minutes = ctx.settings.maintenance.long_query_minutes
    # VACUUM of a large database may rightly outlast any statement limit
    with (
        engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn,
        unbounded_statements(conn),
    ):
        conn.execute(text("VACUUM ANALYZE"))
        tables = [
            dict(r._mapping)
            for r in conn.execute(
                text(
                    "SELECT relname AS table, n_live_tup AS live_rows, n_dead_tup AS dead_rows "
                    "FROM pg_stat_user_tables ORDER BY n_live_tup DESC"
                )
            )
        ]
        long = [
            {"pid": r.pid, "minutes": round(r.seconds / 60, 1), "query": r.query[:200]}
            for r in conn.execute(
                text(
                    "SELECT pid, EXTRACT(EPOCH FROM now() - query_start) AS seconds, query "
                    "FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
                    "AND datname = current_database() AND now() - query_start > "
                    "make_interval(secs => :s)"
                ),
                {"s": minutes * 60.0},
            )
        ]
    details = {"tables": tables, "long_queries": long}
    if long:
        return TaskResult(
            "warn",
            f"VACUUM ANALYZE done; {len(long)} queries running longer than {minutes:g} min",
            details,
        )
    return TaskResult("ok", f"VACUUM ANALYZE done on {len(tables)} tables", details)


@task("logs", "daily", "Compress large logs; delete compressed logs past their retention.")
def logs(ctx: TaskContext) -> TaskResult:
    m = ctx.settings.maintenance
    log_dir = ctx.settings.home / "logs"
    compressed, deleted, notes = [], [], []
    for path in sorted(log_dir.glob("*")) if log_dir.is_dir() else []:
        if not path.is_file() or path.name.endswith(COMPRESSED):
            continue
        if path.stat().st_size <= m.log_compress_mb * MB:
            continue
        if path.name == LOG_FILE:  # held open by the running service; rotation handles it
            notes.append(f"{path.name} is over {m.log_compress_mb:g} MB; lower log.max_bytes")
            continue
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        before = path.stat().st_size
        after = compress(path, path.with_name(f"{path.name}.{stamp}{COMPRESSED}"))
        compressed.append({"file": path.name, "bytes": before, "compressed": after})
    for path in old_files(log_dir, m.log_retention_days):
        if path.name.endswith(COMPRESSED):
            remove(path)
            deleted.append(path.name)
    summary = f"compressed {len(compressed)} log(s), deleted {len(deleted)} old compressed log(s)"
    details = {"compressed": compressed, "deleted": deleted, "notes": notes}
    return TaskResult("warn" if notes else "ok", "; ".join([summary, *notes]), details)


def leftovers(settings) -> list:
    """Temporary files of writers killed midway (imports, models, reports, ...) anywhere in
    the data directory: stale by maintenance.stale_temp_minutes and no live writer."""
    from sctk.fsutil import stale_temporaries

    home = settings.home
    # a restore in progress keeps its staging and journal under tmp/: never touch them
    restoring = set((home / "tmp").glob("restore*"))
    return stale_temporaries(home, settings.maintenance.stale_temp_minutes * 60.0, restoring)


@task("tmp", "daily", "Delete old temporary files (tmp/, the scratch space, crash leftovers).")
def tmp(ctx: TaskContext) -> TaskResult:
    m, home = ctx.settings.maintenance, ctx.settings.home
    scratch = home / SCRATCH
    from sctk.ops.upgrade import JOURNAL

    keep = {home / PID_FILE, scratch, home / JOURNAL}  # an interrupted upgrade's journal too
    # a restore in progress keeps its staging and journal under tmp/: never touch them
    keep |= {p for p in (home / "tmp").glob("restore*")}
    removed = [
        *old_files(home / "tmp", m.tmp_max_age_days, keep),
        *old_files(scratch, m.scratch_max_age_days),
    ]
    removed += [t.path for t in leftovers(ctx.settings) if t.path not in removed]
    removed += [p for p in runstate.stale(home) if p not in removed]  # kill -9'd services
    freed = sum(remove(p) for p in removed)
    return TaskResult(
        "ok",
        f"deleted {len(removed)} temporary file(s), {freed / MB:.1f} MB",
        {"deleted": [p.relative_to(home).as_posix() for p in removed], "bytes": freed},
    )


@task("archive_results", "daily", "Move old results, compressed, to archive/.")
def archive_results(ctx: TaskContext) -> TaskResult:
    """Results older than the threshold move to archive/ with zstd; a dataset row naming such
    a file is pointed at its new place. The model registry's files stay: a model in use must
    remain loadable, and deleting a model is the way to retire it."""
    home = ctx.settings.home
    results = home / "results"
    moved = []
    for path in old_files(
        results, ctx.settings.maintenance.results_archive_days, {results / "models"}
    ):
        rel = path.relative_to(home).as_posix()
        target = home / "archive" / f"{path.relative_to(results).as_posix()}{COMPRESSED}"
        compress(path, target)
        new_rel = target.relative_to(home).as_posix()
        with session_scope(ctx.engine) as s:
            s.execute(update(Dataset).where(Dataset.path == rel).values(path=new_rel))
        moved.append({"from": rel, "to": new_rel})
    return TaskResult("ok", f"archived {len(moved)} result file(s)", {"archived": moved})


@task("backup", "daily", "Take the daily backup, then prune by the retention settings.")
def backup(ctx: TaskContext) -> TaskResult:
    from sctk.backup.admin import ensure_repo
    from sctk.backup.create import create_backup
    from sctk.backup.prune_run import prune_backups

    # the first run makes the repository: backups work from the first night on
    created = ensure_repo(ctx.runtime, actor=ctx.actor)
    snap = create_backup(ctx.runtime, "daily", actor=ctx.actor)
    pruned = prune_backups(ctx.runtime, actor=ctx.actor)
    removed = len(pruned.get("removed", []))
    made = f"created the repository at {created}; " if created else ""
    return TaskResult(
        "ok",
        f"{made}snapshot {snap['id'][:8]} ({snap.get('added_bytes', 0) / MB:.1f} MB new); "
        f"prune removed {removed} snapshot(s)",
        {"snapshot": snap, "prune": pruned, "repository_created": created},
    )
