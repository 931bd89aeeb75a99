"""What watches the collector in a running service: the alert engine evaluates every
sample against the rules, and one anomaly detector per metric feeds the anomalies it finds
to the engine as warning alerts (and its anomaly scores to the rules that watch them). A
maintenance task that fails (announced on the bus by the task runner, in whichever process
ran it) raises a warning alert too, and so does a model whose observed coverage is below its
target with evidence (`uq.coverage_low`, sctk.uq.observations). Alert transitions are
published on the bus."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import sessionmaker

from sctk.config import Settings
from sctk.monitoring.rules import split_metric

log = logging.getLogger(__name__)


class Watch:
    def __init__(self, settings: Settings, sessions: sessionmaker, collector: Any, bus: Any):
        from sctk.monitoring.alert_engine import start_engine

        self.settings = settings
        self.engine = start_engine(settings, sessions).attach(collector)
        if bus is not None:
            self.engine.listeners.append(lambda kind, data: bus.publish(kind, data))
        from sctk.monitoring.anomaly import DetectorSet

        self._detectors = DetectorSet(settings.anomaly)
        self._undo = collector.subscribe(self._detect)
        self._bus_sub = self._coverage_sub = None
        if bus is not None:
            self._bus_sub = bus.subscribe(
                "maintenance.failed", self._maintenance_failed, "alerts.maintenance_failed"
            )
            self._coverage_sub = bus.subscribe(
                "uq.coverage_low", self._coverage_low, "alerts.coverage_low"
            )

    def _maintenance_failed(self, envelope: Any) -> None:
        from sctk.monitoring.alerts import MAINTENANCE_RULE

        task = str(envelope.payload.get("task", "?"))
        self.engine.raise_anomaly(
            datetime.now(UTC),
            "maintenance",
            f"maintenance task {task} failed: {envelope.payload.get('summary', '')}"[:500],
            labels={"task": task},
            rule=MAINTENANCE_RULE,
        )

    def _coverage_low(self, envelope: Any) -> None:
        """A model's rolling coverage is below its target with statistical evidence (the
        binomial test of sctk.uq.observations); the alert resolves once no such finding
        came for alerts.anomaly_resolve_seconds."""
        from sctk.monitoring.alerts import COVERAGE_RULE

        p = envelope.payload
        model = str(p.get("model", "?"))[:200]
        coverage = float(p.get("coverage") or 0.0)
        self.engine.raise_anomaly(
            datetime.now(UTC),
            "model_coverage",
            f"model {model}: coverage {coverage:.3f} over the last {p.get('n')} observations, "
            f"below the target {float(p.get('target') or 0):.3f} (binomial p = "
            f"{float(p.get('p_value') or 0):.2g})",
            value=coverage,
            labels={"model": model},
            rule=COVERAGE_RULE,
        )

    def _detect(self, now: datetime, sample: dict[str, float]) -> None:
        t = now.timestamp()
        watched = self.engine.score_metrics
        scores: dict[str, float] = {}
        for metric, value in sample.items():
            found = self._detectors.update(metric, t, value)
            if found is not None:
                log.info("anomaly on %s: %s", metric, found.message)
                self.engine.anomaly_found(found)
            if watched and split_metric(metric)[0] in watched:
                scores[metric] = self._detectors.score(metric)
        if scores:
            self.engine.observe_scores(now, scores)

    def close(self) -> None:
        for sub in (self._bus_sub, self._coverage_sub):
            if sub is not None:
                sub.bus.unsubscribe(sub)
        self._undo()
        self.engine.close()


def start_watch(settings: Settings, sessions: sessionmaker, collector: Any, bus: Any) -> Watch:
    return Watch(settings, sessions, collector, bus)
