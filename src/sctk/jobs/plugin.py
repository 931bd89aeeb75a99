"""What the job system adds: its own job kinds (the built-in ones used by operators and tests).

Declared in sctk's pyproject.toml under [project.entry-points."sctk.plugins"]; see
sctk.plugins for how a registry calls these."""

from __future__ import annotations


def job_kinds() -> None:
    import sctk.jobs.builtin  # noqa: F401 - its decorators declare them
