"""The plugin module sctk loads (entry point `example` of the group `sctk.plugins`).

sctk calls each function here when it first reads the registry of the same name; each
declares its entries with that registry's decorator."""

from __future__ import annotations


def anomaly_detectors() -> None:
    from sctk.monitoring.anomaly import detector
    from sctk_example_plugin.detector import MadDetector

    detector(MadDetector)


def maintenance_tasks() -> None:
    # the module's @task decorator declares it
    from sctk_example_plugin import tasks  # noqa: F401
