"""The served app watches its own metrics: a threshold crossed opens an alert over HTTP,
an anomaly found by the detector becomes a warning alert, and a rule on the anomaly score
fires when the score stays high for its `for`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import sessionmaker

from sctk import config
from sctk.api.app import create_app
from sctk.monitoring.watch import Watch
from sctk.storage.models import Alert
from tests.helpers import LiveServer, wait_until
from tests.security.conftest import ACCOUNTS, Api, create_user, sqlite_only


@sqlite_only
def test_a_crossed_threshold_shows_as_a_firing_alert_in_the_api(settings, engine):
    # a memory level every machine is above, holding for no time: the first samples fire it
    s = config.load(settings.home, {
        "alerts": {"rules": [{"metric": "memory_percent", "warning": 0.5, "for_seconds": 0}]},
        "monitor": {"interval_seconds": 0.2},
    }).settings  # fmt: skip
    admin = ACCOUNTS["admin"]
    create_user(engine, admin.username, admin.password, admin.role)
    with LiveServer(create_app(s, workers=0, collect=True, schedule=True)) as server:
        api = Api(server, s, engine, {"admin": admin})
        try:
            firing = wait_until(
                lambda: [a for a in api.http.get("/api/v1/alerts", headers=api.headers("admin"))
                         .json() if a["metric"] == "memory_percent"],
                timeout=30, what="the memory alert",
            )  # fmt: skip
            assert firing[0]["status"] == "firing" and firing[0]["severity"] == "warning"
        finally:
            api.close()


class FakeCollector:
    def __init__(self):
        self.callbacks = []

    def subscribe(self, callback):
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def emit(self, now, sample):
        for cb in list(self.callbacks):
            cb(now, sample)


def test_an_anomaly_in_a_quiet_series_opens_one_warning_alert(settings, engine):
    published = []

    class Bus:
        def publish(self, kind, data):
            published.append(kind)

        def subscribe(self, pattern, handler, name):
            return type("Sub", (), {"bus": self})()

        def unsubscribe(self, sub):
            pass

    collector = FakeCollector()
    # every sample to the detector, so that a short series shows an anomaly
    raw = config.load(settings.home, {"anomaly": {"sample_seconds": 0}}).settings
    watch = Watch(raw, sessionmaker(engine), collector, Bus())
    try:
        start = datetime(2026, 11, 27, tzinfo=UTC)
        for i in range(660):  # ten quiet minutes of a quantised series, then a jump
            value = 500.0 if 600 <= i < 630 else 12.0
            collector.emit(start + timedelta(seconds=i), {"load1": value})
    finally:
        watch.close()
    with sessionmaker(engine)() as s:
        alerts = s.query(Alert).filter(Alert.metric == "load1").all()
    assert len(alerts) == 1 and alerts[0].severity == "warning"
    assert "alert.fired" in published


def test_an_anomaly_score_rule_fires_when_the_score_stays_high_for_its_for(settings, engine):
    collector = FakeCollector()
    s = config.load(settings.home, {
        "anomaly": {"sample_seconds": 0},
        "alerts": {"rules": [{"name": "load1_odd", "metric": "load1", "on": "anomaly_score",
                              "warning": 0.9, "for_seconds": 2}]},
    }).settings  # fmt: skip
    watch = Watch(s, sessionmaker(engine), collector, None)
    start = datetime(2026, 11, 27, tzinfo=UTC)

    def odd_alerts(values):
        for i, value in enumerate(values):
            collector.emit(start + timedelta(seconds=i), {"load1": value})
        with sessionmaker(engine)() as session:
            return session.query(Alert).filter(Alert.rule == "load1_odd").all()

    try:
        scores = []
        quiet = [12.0] * 300
        # one odd second: the score is high for less than `for`, no alert
        assert odd_alerts([*quiet, 500.0, *quiet[:50]]) == []
        # a lasting jump: high for the seconds the detector takes to learn it (> 2 s)
        start += timedelta(seconds=400)
        (alert,) = odd_alerts([*quiet[:100], *[500.0] * 10])
        scores.append(watch._detectors.score("load1"))
    finally:
        watch.close()
    assert alert.severity == "warning" and alert.status == "firing"
    assert "anomaly score of load1" in alert.message and alert.value > 0.9
    assert scores[0] < 0.5  # learnt: the new level scores as normal


def test_score_rules_accept_scores_only_and_fire_above(settings):
    from pydantic import ValidationError

    from sctk.monitoring.rules import ThresholdRule

    rule = ThresholdRule(metric="load1", on="anomaly_score", warning=0.8, critical=0.99)
    assert rule.levels() == [("critical", 0.99), ("warning", 0.8)]
    for bad, words in (
        ({"warning": 1.5}, "1.5 is outside 0..1 for an anomaly score"),
        ({"warning": 0.8, "op": "<"}, "use op = '>'"),
    ):
        with pytest.raises(ValidationError, match=words):
            ThresholdRule(metric="load1", on="anomaly_score", **bad)


def test_a_failed_maintenance_task_raises_an_alert(settings, engine):
    from sctk.bus import get_bus
    from tests.helpers import run_task

    bus = get_bus(settings)
    bus.start()
    collector = FakeCollector()
    watch = Watch(settings, sessionmaker(engine), collector, bus)
    try:
        assert run_task(settings, "backup").status == "fail"  # no repository, no passphrase

        def alert():
            with sessionmaker(engine)() as s:
                return s.query(Alert).filter(Alert.rule == "maintenance").all()

        (found,) = wait_until(alert, timeout=20, what="the maintenance alert")
        assert found.labels == {"task": "backup"} and "backup failed" in found.message
    finally:
        watch.close()
        bus.stop()
