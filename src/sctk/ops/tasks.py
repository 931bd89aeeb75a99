"""The maintenance task registry: every scheduled procedure of the maintenance guide is a
task with a name, the schedule group it belongs to (daily, weekly, monthly, quarterly) and a
function that returns what it found and did.

Tasks are declared with `@task` by the plugins (sctk.plugins) of sctk's domains and of
installed packages; reading the registry loads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from sctk.config import Settings
from sctk.errors import SctkError
from sctk.registry import Registry
from sctk.runtime import Runtime

GROUPS = ("daily", "weekly", "monthly", "quarterly")
STATUSES = ("ok", "warn", "fail")


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
    """What a task is given: the runtime of the process running it (the command's, the
    served app's or the scheduler's), who runs it and why."""

    runtime: Runtime
    actor: str = "scheduler"
    trigger: str = "manual"

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def engine(self) -> Engine:
        return self.runtime.engine


TaskFunc = Callable[[TaskContext], TaskResult]


@dataclass(frozen=True)
class Task:
    name: str
    group: str
    description: str
    func: TaskFunc


# declared by each domain's plugin (sctk.plugins), and by installed packages' plugins
TASKS: Registry[Task] = Registry("maintenance task", "maintenance_tasks")


def task(name: str, group: str, description: str) -> Callable[[TaskFunc], TaskFunc]:
    """Register the decorated function as maintenance task NAME of GROUP."""
    if group not in GROUPS:
        raise ValueError(f"unknown task group {group!r}")

    def register(func: TaskFunc) -> TaskFunc:
        TASKS.add(name, Task(name, group, description, func), func.__module__)
        return func

    return register


def registered() -> dict[str, Task]:
    return dict(TASKS)


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
