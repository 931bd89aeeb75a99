"""What the UQ engine adds: its job kinds (training, evaluation, prediction).

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def job_kinds() -> None:
    # each module's @job_kind decorators declare its kinds
    from sctk.uq import jobs, predict_job  # noqa: F401
