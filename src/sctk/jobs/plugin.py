"""What the job system adds: its own job kinds (the built-in ones used by operators and tests).

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def job_kinds() -> None:
    import sctk.jobs.builtin  # noqa: F401 - its decorators declare them
