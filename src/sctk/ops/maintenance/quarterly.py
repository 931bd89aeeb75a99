"""Quarterly maintenance: the disaster-recovery drill."""

from __future__ import annotations

from sctk.ops.tasks import TaskContext, TaskResult, task


@task("dr_drill", "quarterly", "Restore the latest backup elsewhere, serve it, measure RTO/RPO.")
def dr_drill(ctx: TaskContext) -> TaskResult:
    from sctk.ops.drill import dr_drill as run_drill

    result = run_drill(ctx.runtime, actor=ctx.actor)
    healthy = result["health_status"] == 200
    summary = (
        f"recovered in {result['rto_seconds']:.1f} s (RTO) from a snapshot "
        f"{result['rpo_seconds'] / 3600:.1f} h old (RPO); restored service "
        f"{'healthy' if healthy else 'NOT ready'} on 127.0.0.1:{result['port']}"
    )
    summary = " ".join([*result.get("skipped", []), summary])
    return TaskResult("ok" if healthy else "warn", summary, result)
