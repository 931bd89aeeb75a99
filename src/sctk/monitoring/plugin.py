"""What monitoring adds: its health checks, the built-in anomaly detectors and the models of
its settings sections ([alerts], [anomaly]).

One of sctk's own plugins (sctk.plugins.BUILTIN); see sctk.plugins for how a registry calls
these."""

from __future__ import annotations


def health_checks() -> None:
    import sctk.monitoring.checks  # noqa: F401 - its decorators declare them


def anomaly_detectors() -> None:
    import sctk.monitoring.anomaly  # noqa: F401 - its decorators declare them


def settings_sections() -> None:
    # their `@settings_section` decorators declare them
    import sctk.monitoring.anomaly_settings
    import sctk.monitoring.rules  # noqa: F401
