"""Running maintenance tasks and recording each run (start, end, status, summary, details).

A task that raises is a failed run with the exception as its summary: one broken task never
stops the rest of its group. Failed runs are announced on the bus (`maintenance.failed`) so
the alerting side raises an alert for them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from sctk.errors import SctkError
from sctk.fsutil import no_space_error
from sctk.ops.tasks import Task, TaskContext, TaskResult, get_task, group_tasks
from sctk.runtime import Runtime
from sctk.security import audit_log
from sctk.storage.engine import session_scope
from sctk.storage.models import MaintenanceRun

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    id: int
    task: str
    status: str
    summary: str
    details: dict[str, Any]
    seconds: float


def _publish_failure(rt: Runtime, task: str, summary: str) -> None:
    try:
        rt.bus.publish("maintenance.failed", {"task": task, "summary": summary})
    except Exception:  # the record is what matters; the announcement is best effort
        log.exception("could not publish the failure of maintenance task %s", task)


def run_one(rt: Runtime, task: Task, trigger: str, actor: str) -> RunRecord:
    """Run TASK on RT and record the run: its start, then its outcome with an audit entry."""
    settings = rt.settings
    with rt.session() as s:
        row = MaintenanceRun(task=task.name, trigger=trigger, status="running")
        s.add(row)
        s.flush()
        run_id = row.id
    started = time.perf_counter()
    try:
        result = task.func(TaskContext(rt, actor=actor, trigger=trigger))
    except SctkError as exc:  # a stated reason (no passphrase, no repository): no traceback
        log.warning("maintenance task %s failed: %s", task.name, exc.message)
        result = TaskResult("fail", exc.message)
    except Exception as exc:  # a failing task is a recorded outcome
        full = no_space_error(exc, settings.home)
        if full is not None:  # a full disk under a report or an archive: its one sentence
            log.warning("maintenance task %s failed: %s", task.name, full.message)
            result = TaskResult("fail", full.message)
        else:
            log.exception("maintenance task %s raised", task.name)
            result = TaskResult("fail", f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - started
    with rt.session() as s:
        row = s.get(MaintenanceRun, run_id)
        row.status, row.summary = result.status, result.summary[:2000]
        row.details = {**result.details, "seconds": round(seconds, 3)}
        row.finished_at = datetime.now(UTC)
        audit_log.record(
            s,
            "maintenance.run",
            actor=actor,
            target=task.name,
            outcome="ok" if result.status != "fail" else "failure",
            details={"status": result.status, "summary": result.summary[:200]},
        )
    if result.status == "fail":
        _publish_failure(rt, task.name, result.summary)
    return RunRecord(run_id, task.name, result.status, result.summary, result.details, seconds)


def run_task(rt: Runtime, name: str, trigger: str = "manual", actor: str = "cli") -> RunRecord:
    """Run maintenance task NAME on RT's engine and record the run."""
    return run_one(rt, get_task(name), trigger, actor)


def run_group(
    rt: Runtime, group: str, trigger: str = "manual", actor: str = "cli"
) -> list[RunRecord]:
    """Every task of GROUP in registration order, then one record for the group itself."""
    tasks = group_tasks(group)
    records = [run_one(rt, t, trigger, actor) for t in tasks]
    worst = max((r.status for r in records), key=["ok", "warn", "fail"].index, default="ok")
    counts = {s: sum(r.status == s for r in records) for s in ("ok", "warn", "fail")}
    with rt.session() as s:
        s.add(
            MaintenanceRun(
                task=group,
                trigger=trigger,
                status=worst,
                summary=f"{len(records)} tasks: {counts['ok']} ok, {counts['warn']} warn, "
                f"{counts['fail']} fail",
                details={"runs": [r.id for r in records]},
                finished_at=datetime.now(UTC),
            )
        )
    return records


def history(engine, task: str | None = None, limit: int = 50) -> list[MaintenanceRun]:
    with session_scope(engine) as s:
        query = select(MaintenanceRun).order_by(MaintenanceRun.id.desc()).limit(limit)
        if task:
            query = query.where(MaintenanceRun.task == task)
        return list(s.scalars(query))
