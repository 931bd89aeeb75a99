"""What operations add: the scheduled maintenance tasks of the maintenance guide.

Declared in sctk's pyproject.toml under [project.entry-points."sctk.plugins"]; see
sctk.plugins for how a registry calls these."""

from __future__ import annotations


def maintenance_tasks() -> None:
    # each module's @task decorators declare its group's tasks
    from sctk.ops.maintenance import daily, monthly, quarterly, uq, weekly  # noqa: F401
