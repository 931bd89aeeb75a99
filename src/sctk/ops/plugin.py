"""What operations add: the scheduled maintenance tasks of the maintenance guide.

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def maintenance_tasks() -> None:
    # each module's @task decorators declare its group's tasks
    from sctk.ops.maintenance import daily, monthly, quarterly, uq, weekly  # noqa: F401
