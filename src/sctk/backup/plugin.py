"""What backups add: their job kinds and health checks.

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def job_kinds() -> None:
    import sctk.backup.jobs  # noqa: F401 - its decorators declare them


def health_checks() -> None:
    import sctk.backup.checks  # noqa: F401 - its decorators declare them
