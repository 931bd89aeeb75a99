"""Helpers of the dashboard's browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sctk.monitoring.alert_engine import AlertEngine
from tests.helpers import wait_until


@contextmanager
def alerting_on(site, metric: str, level: float) -> Iterator[AlertEngine]:
    """The real alert engine on the served app's own metrics collector, with one rule: METRIC
    above LEVEL (no `for` delay). Its next sample crosses the threshold."""
    from sctk.monitoring.rules import AlertSettings, ThresholdRule

    app = site.server.server.config.app
    assert app.state.collector is not None, "the site serves no metrics collector"
    cfg = AlertSettings(
        rules=[ThresholdRule(name=f"{metric}-low", metric=metric, warning=level, for_seconds=0)],
        trend_rules=[],
    )
    engine = AlertEngine(cfg, app.state.sessionmaker).attach(app.state.collector)
    try:
        yield engine
    finally:
        engine.close()


def shown_when_fired(browsing, alerts: AlertEngine, selector: str) -> Any:
    """SELECTOR on BROWSING's page (a tests.web.conftest.Browsing) once ALERTS has fired an
    alert on the server and the page has refreshed: polled, never reloaded."""
    wait_until(alerts.open_alerts, timeout=20, what="the alert to fire on the server")
    return browsing.refreshed(selector)
