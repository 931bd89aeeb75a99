"""Health checks: one registry drawn on by `sctk health`, /health/ready, doctor and the audit."""

from sctk.health.registry import CheckOutcome, HealthReport, Status, check, run_checks

__all__ = ["CheckOutcome", "HealthReport", "Status", "check", "run_checks"]
