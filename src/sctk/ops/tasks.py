"""The maintenance task registry: every scheduled procedure of the maintenance guide is a
task with a name, the schedule group it belongs to (daily, weekly, monthly, quarterly) and a
function that returns what it found and did.

Task modules register themselves on import, like the health checks; TASK_MODULES lists them
so that `registered()` knows every task without importing the rest of the application first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from sctk.config import Settings
from sctk.errors import SctkError

GROUPS = ("daily", "weekly", "monthly", "quarterly")
STATUSES = ("ok", "warn", "fail")
TASK_MODULES = [
    "sctk.ops.maintenance.daily",
    "sctk.ops.maintenance.weekly",
    "sctk.ops.maintenance.monthly",
    "sctk.ops.maintenance.quarterly",
    "sctk.ops.maintenance.uq",
]


@dataclass
class TaskResult:
    status: str  # ok | warn | fail
    summary: str  # one line
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"task status must be one of {STATUSES}, not {self.status!r}")


@dataclass
class TaskContext:
    settings: Settings
    engine: Engine
    actor: str = "scheduler"
    trigger: str = "manual"


TaskFunc = Callable[[TaskContext], TaskResult]


@dataclass(frozen=True)
class Task:
    name: str
    group: str
    description: str
    func: TaskFunc


_TASKS: dict[str, Task] = {}


def task(name: str, group: str, description: str) -> Callable[[TaskFunc], TaskFunc]:
    """Register the decorated function as maintenance task NAME of GROUP."""
    if group not in GROUPS:
        raise ValueError(f"unknown task group {group!r}")

    def register(func: TaskFunc) -> TaskFunc:
        _TASKS[name] = Task(name, group, description, func)
        return func

    return register


def registered() -> dict[str, Task]:
    for module in TASK_MODULES:
        importlib.import_module(module)
    return dict(_TASKS)


def get_task(name: str) -> Task:
    tasks = registered()
    if name not in tasks:
        raise SctkError(
            f"Unknown maintenance task '{name}'; 'sctk maintenance list' shows the tasks "
            f"({', '.join(sorted(tasks))})."
        )
    return tasks[name]


def group_tasks(group: str) -> list[Task]:
    if group not in GROUPS:
        raise SctkError(f"Unknown schedule '{group}'; use one of {', '.join(GROUPS)}.")
    return [t for t in registered().values() if t.group == group]
