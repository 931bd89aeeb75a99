"""A maintenance task, run weekly by the scheduler and by `sctk maintenance run`."""

from __future__ import annotations

from sctk.ops.tasks import TaskContext, TaskResult, task


@task("example.results_count", "weekly", "Count the files under the data directory's results/.")
def results_count(ctx: TaskContext) -> TaskResult:
    results = ctx.settings.home / "results"
    count = sum(1 for p in results.rglob("*") if p.is_file()) if results.is_dir() else 0
    return TaskResult("ok", f"{count} result files", {"files": count})
