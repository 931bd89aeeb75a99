"""What the data pipeline adds: its job kinds (imports, transforms).

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def job_kinds() -> None:
    import sctk.pipeline.jobs  # noqa: F401 - its decorators declare them
