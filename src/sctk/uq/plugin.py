"""What the UQ engine adds: its job kinds (training, evaluation, prediction).

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def job_kinds() -> None:
    import sctk.uq.jobs  # noqa: F401 - its decorators declare them
