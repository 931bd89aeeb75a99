"""What the UQ engine adds: its job kinds (training, evaluation, prediction) and its model
kinds (tabular, field).

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def job_kinds() -> None:
    # each module's @job_kind decorators declare its kinds
    from sctk.uq import jobs, predict_job  # noqa: F401


def model_kinds() -> None:
    # each module declares its kind with @model_kind
    from sctk.uq import field_kind, tabular_kind  # noqa: F401
