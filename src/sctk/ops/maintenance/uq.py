"""UQ maintenance: models whose observed coverage fell below target are recalibrated."""

from __future__ import annotations

from sctk.ops.tasks import TaskContext, TaskResult, task
from sctk.storage.engine import session_scope


@task(
    "uq_recalibrate",
    "daily",
    "Recalibrate from observations each model whose coverage test fails.",
)
def uq_recalibrate(ctx: TaskContext) -> TaskResult:
    from sctk.errors import SctkError
    from sctk.uq import cache, observations

    uq = ctx.settings.uq
    done, failed, watched = [], [], 0
    with session_scope(ctx.engine) as session:
        for row, window in observations.all_windows(session, uq):
            watched += 1
            if not window["low"]:
                continue
            label = f"{row.name}:{row.version}"
            try:
                observations.recalibrate(
                    session, ctx.settings, row, cache.get_cache(ctx.settings.cache), ctx.actor
                )
                done.append({"model": label, "coverage_before": window["coverage"]})
            except SctkError as exc:
                session.rollback()
                failed.append({"model": label, "error": exc.message})
    details = {"watched": watched, "recalibrated": done, "failed": failed}
    if failed:
        names = ", ".join(f["model"] for f in failed)
        return TaskResult("warn", f"could not recalibrate {names}: {failed[0]['error']}", details)
    if done:
        names = ", ".join(d["model"] for d in done)
        return TaskResult("ok", f"recalibrated {names} from their observations", details)
    return TaskResult("ok", f"{watched} model(s) watched, every coverage on target", details)
