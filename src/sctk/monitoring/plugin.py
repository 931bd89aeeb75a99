"""What monitoring adds: its health checks and the built-in anomaly detectors.

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def health_checks() -> None:
    import sctk.monitoring.checks  # noqa: F401 - its decorators declare them


def anomaly_detectors() -> None:
    import sctk.monitoring.anomaly  # noqa: F401 - its decorators declare them
