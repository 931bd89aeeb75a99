"""What the platform adds: the database, schema, disk and process health checks.

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def health_checks() -> None:
    import sctk.health.platform  # noqa: F401 - its decorators declare them
