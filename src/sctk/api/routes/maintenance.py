"""/api/v1/maintenance: the recorded runs of maintenance tasks, the task registry, and running
one task now (admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel

from sctk.api.deps import require
from sctk.security.credentials import Principal

router = APIRouter(prefix="/maintenance", tags=["maintenance"])


class RunOut(BaseModel):
    id: int
    task: str
    status: str
    summary: str
    details: dict[str, Any]
    trigger: str
    started_at: datetime
    finished_at: datetime | None


class TaskOut(BaseModel):
    name: str
    group: str
    description: str


def _run_dict(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "task": r.task,
        "status": r.status,
        "summary": r.summary or "",
        "details": r.details or {},
        "trigger": r.trigger,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
    }


@router.get("/runs", response_model=list[RunOut], summary="Maintenance runs, newest first.")
def list_runs(
    request: Request,
    _user=require("read"),
    task: str | None = Query(None, max_length=100, description="Only this task's runs."),
    limit: int = Query(50, ge=1, le=1000),
) -> list[dict[str, Any]]:
    from sctk.ops import runner

    return [_run_dict(r) for r in runner.history(request.app.state.engine, task, limit)]


@router.get("/tasks", response_model=list[TaskOut], summary="Maintenance tasks there are.")
def list_tasks(_user=require("read")) -> list[TaskOut]:
    from sctk.ops.tasks import registered

    return [
        TaskOut(name=t.name, group=t.group, description=t.description)
        for t in registered().values()
    ]


@router.post(
    "/run/{task}",
    response_model=RunOut,
    summary="Run one maintenance task now and record the run; answers when it has ended.",
)
def run_task(
    request: Request,
    user: Principal = require("maintenance.run"),
    task: str = Path(min_length=1, max_length=100, description="A task name: GET .../tasks."),
) -> dict[str, Any]:
    from sctk.ops import runner
    from sctk.storage.models import MaintenanceRun

    rt = request.app.state.runtime
    # inline (a worker thread of the server): the tasks an operator starts by hand are short,
    # and the answer is the recorded run itself; an unknown task: 400 naming the known ones
    record = runner.run_task(rt, task, "api", user.username)
    with rt.session() as s:
        return _run_dict(s.get(MaintenanceRun, record.id))
