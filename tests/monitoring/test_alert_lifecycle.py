"""The alert lifecycle in simulated time: `for`, deduplication, cooldown, repeat, resolution,
silences, acknowledgement, inhibition, trend rules, anomalies and restarts.

The engine runs against the real database of the parametrised backend and a real log
channel behind the real dispatcher; what was sent is read back from the notifications table
and the alert events (whose times are the simulated ones).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from sctk.errors import SctkError
from sctk.monitoring import alerts
from sctk.monitoring.alert_engine import AlertEngine
from sctk.monitoring.clock import ManualClock
from sctk.monitoring.notifiers import Dispatcher, LogChannel, db_recorder
from sctk.monitoring.rules import AlertSettings, ThresholdRule
from sctk.storage.engine import make_engine
from sctk.storage.models import Alert, AlertEvent, AlertSilence, Incident, NotificationAttempt


@dataclass
class Rig:
    """An engine on a real database, a manual clock, and the real log channel."""

    sessions: sessionmaker
    clock: ManualClock
    cfg: AlertSettings
    engine: AlertEngine
    dispatcher: Dispatcher

    def run(self, seconds: int, value: float | Callable[[int], float], metric="cpu_percent"):
        """One sample a second for SECONDS of simulated time."""
        for i in range(seconds):
            v = value(i) if callable(value) else value
            self.engine.observe(self.clock.advance(1), {metric: v})

    def sent(self) -> list[NotificationAttempt]:
        assert self.dispatcher.drain(10), "the log channel did not finish"
        with self.sessions() as s:
            return list(s.scalars(select(NotificationAttempt).order_by(NotificationAttempt.id)))

    def kinds(self) -> list[str]:
        return [a.kind for a in self.sent() if a.ok]

    def alerts(self) -> list[Alert]:
        with self.sessions() as s:
            return list(s.scalars(select(Alert).order_by(Alert.id)))

    def events(self, kind: str | None = None) -> list[AlertEvent]:
        with self.sessions() as s:
            stmt = select(AlertEvent).order_by(AlertEvent.id)
            if kind:
                stmt = stmt.where(AlertEvent.kind == kind)
            return list(s.scalars(stmt))

    def restart(self) -> AlertEngine:
        """A new engine on the same database, as after a process restart."""
        self.engine = AlertEngine(self.cfg, self.sessions, self.dispatcher, clock=self.clock)
        return self.engine


def make_cfg(**overrides) -> AlertSettings:
    base = {
        "rules": [ThresholdRule(metric="cpu_percent", warning=70, critical=90, for_seconds=60)],
        "trend_rules": [],
        "cooldown_seconds": 300,
        "repeat_interval_seconds": 3600,
    }
    base.update(overrides)
    return AlertSettings(**base)


@pytest.fixture
def rig_factory(settings) -> Iterator[Callable[..., Rig]]:
    engine = make_engine(settings)
    sessions = sessionmaker(engine, expire_on_commit=False)
    made: list[Rig] = []

    def build(**overrides) -> Rig:
        cfg = make_cfg(**overrides)
        clock = ManualClock()
        dispatcher = Dispatcher(
            [LogChannel()], record=db_recorder(sessions), max_attempts=1, backoff_seconds=0
        )
        rig = Rig(sessions, clock, cfg, AlertEngine(cfg, sessions, dispatcher, clock=clock),
                  dispatcher)  # fmt: skip
        made.append(rig)
        return rig

    yield build
    for rig in made:
        rig.dispatcher.stop()
    engine.dispose()


@pytest.fixture
def rig(rig_factory) -> Rig:
    return rig_factory()


def test_a_crossing_shorter_than_for_does_not_fire(rig):
    # 60 samples a second apart: the condition held for 59 s (< 60 s) since the first one
    rig.run(60, 95.0)
    rig.run(120, 20.0)
    rig.run(60, 80.0)
    assert rig.alerts() == []
    assert rig.sent() == []


def test_a_crossing_fires_once_and_recovery_sends_one_resolution(rig):
    rig.run(60, 75.0)
    assert rig.alerts() == []
    rig.run(1, 75.0)  # held for 60 s since the first crossing: fires now
    (alert,) = rig.alerts()
    assert (alert.severity, alert.status, alert.rule) == ("warning", "firing", "cpu_percent")
    assert rig.kinds() == ["firing"]

    # still crossing, then flapping inside the cooldown: the same alert, nothing new sent
    rig.run(200, 75.0)
    rig.run(100, lambda i: 50.0 if i % 20 < 10 else 75.0)
    assert [a.id for a in rig.alerts()] == [alert.id]
    assert rig.kinds() == ["firing"]

    # clear for less than the cooldown (299 s since the first clear sample): still firing
    rig.run(300, 40.0)
    assert rig.alerts()[0].status == "firing"
    rig.run(1, 40.0)
    (resolved,) = rig.alerts()
    assert resolved.status == "resolved"
    assert rig.kinds() == ["firing", "resolved"]

    rig.run(900, 40.0)  # quiet afterwards: no second resolution
    assert rig.kinds() == ["firing", "resolved"]
    assert [e.kind for e in rig.events()] == ["fired", "notified", "resolved", "notified"]
    sent = rig.sent()
    assert all(a.channel == "log" and a.ok and a.alert_id == alert.id for a in sent)


def test_reminders_follow_the_repeat_interval_and_stop_when_acknowledged(rig_factory):
    rig = rig_factory(repeat_interval_seconds=600)
    rig.run(61, 80.0)
    rig.run(1800, 80.0)  # half an hour of firing: a reminder every 10 minutes
    notified = rig.events("notified")
    assert [e.details["notice"] for e in notified] == ["firing", "reminder", "reminder", "reminder"]
    gaps = [(b.at - a.at).total_seconds() for a, b in zip(notified, notified[1:], strict=False)]
    assert gaps == [600.0, 600.0, 600.0]

    with rig.sessions() as s:
        alerts.acknowledge(s, rig.alerts()[0].id, "tester", now=rig.clock.now())
        s.commit()
    rig.run(1800, 80.0)
    assert len(rig.events("notified")) == 4  # acknowledged: no more reminders
    rig.run(301, 10.0)
    assert rig.kinds()[-1] == "resolved"  # but its resolution is announced
    assert rig.kinds().count("resolved") == 1


def test_a_flapping_series_sends_at_most_one_notification_per_repeat_interval(rig_factory):
    # fires at once (for 0), crosses for 3 s in every 7 s, for 10 minutes
    rules = [ThresholdRule(metric="cpu_percent", warning=70, for_seconds=0)]
    flapping = lambda i: 85.0 if i % 7 < 3 else 30.0  # noqa: E731

    rig = rig_factory(rules=rules)
    rig.run(600, flapping)
    assert len(rig.alerts()) == 1
    assert rig.kinds() == ["firing"]  # 86 crossings, one notification

    short = rig_factory(rules=rules, repeat_interval_seconds=120, cooldown_seconds=60)
    short.run(600, flapping)
    notified = [e for e in short.events("notified")]
    assert 1 < len(notified) <= 600 // 120 + 1
    times = [e.at for e in notified]
    assert all((b - a).total_seconds() >= 120 for a, b in zip(times, times[1:], strict=False))


def test_a_silenced_alert_sends_nothing(rig):
    rig.run(61, 80.0)
    (alert,) = rig.alerts()
    assert rig.kinds() == ["firing"]

    with rig.sessions() as s:
        alerts.silence(
            s, str(alert.id), duration=timedelta(hours=3), actor="tester", now=rig.clock.now()
        )
        s.commit()
    rig.run(2 * 3600, 80.0)  # past the repeat interval: no reminder
    rig.run(400, 10.0)  # resolved while silenced: no resolution notice either
    assert rig.alerts()[0].status == "resolved"
    assert rig.kinds() == ["firing"]

    # the silence covers the fingerprint: the next episode is silent too
    rig.run(61, 80.0)
    assert len(rig.alerts()) == 2
    rig.run(400, 10.0)
    assert rig.kinds() == ["firing"]
    assert {e.details["reason"] for e in rig.events("suppressed")} == {"silenced"}

    # after the silence ends, alerts are announced again
    rig.clock.advance(3 * 3600)
    rig.run(61, 80.0)
    assert rig.kinds() == ["firing", "firing"]


def test_a_critical_alert_inhibits_the_warning_of_its_fingerprint_and_opens_an_incident(rig):
    rig.run(61, 95.0)
    by_severity = {a.severity: a for a in rig.alerts()}
    assert set(by_severity) == {"warning", "critical"}
    assert by_severity["warning"].fingerprint == by_severity["critical"].fingerprint
    sent = rig.sent()
    assert [(a.kind, a.alert_id) for a in sent] == [("firing", by_severity["critical"].id)]
    assert [e.details for e in rig.events("suppressed")] == [{"reason": "inhibited"}]

    rig.run(3700, 95.0)  # one reminder, for the critical alert only
    assert [(a.kind, a.alert_id) for a in rig.sent()] == [
        ("firing", by_severity["critical"].id),
        ("reminder", by_severity["critical"].id),
    ]
    rig.run(301, 10.0)
    assert {a.status for a in rig.alerts()} == {"resolved"}
    assert [a.kind for a in rig.sent()] == ["firing", "reminder", "resolved"]

    with rig.sessions() as s:
        (incident,) = s.scalars(select(Incident)).all()
        assert incident.fingerprint == by_severity["critical"].fingerprint
        assert incident.status == "open"
    final = {a.severity: a for a in rig.alerts()}
    assert final["critical"].incident_id == incident.id
    assert final["warning"].incident_id is None  # a warning opens no incident


def test_the_warning_speaks_once_the_critical_is_gone(rig):
    rig.run(61, 95.0)
    rig.run(301, 80.0)  # back in the warning band: the critical resolves
    kinds = {a.severity: a.status for a in rig.alerts()}
    assert kinds == {"critical": "resolved", "warning": "firing"}
    rig.run(1, 80.0)
    assert [a.kind for a in rig.sent()] == ["firing", "resolved", "firing"]
    assert rig.sent()[-1].alert_id == next(a.id for a in rig.alerts() if a.severity == "warning")


def test_state_survives_a_restart(rig):
    rig.run(61, 80.0)
    (alert,) = rig.alerts()
    rig.run(100, 10.0)  # clear for 100 s of the 300 s cooldown, then the process restarts
    engine = rig.restart()
    assert engine.open_alerts() == [(alert.fingerprint, "warning", alert.id)]

    rig.run(200, 10.0)
    assert rig.alerts()[0].status == "firing"  # the clear time before the restart counted
    rig.run(1, 10.0)
    assert rig.alerts()[0].status == "resolved"
    assert rig.kinds() == ["firing", "resolved"]

    # a restart while firing does not announce the same alert again
    rig.run(61, 80.0)
    rig.restart()
    rig.run(600, 80.0)
    assert len(rig.alerts()) == 2
    assert rig.kinds() == ["firing", "resolved", "firing"]


def test_trend_rules_variability_and_sustained_average(rig_factory):
    rig = rig_factory(
        rules=[ThresholdRule(metric="cpu_percent", warning=70, critical=90, for_seconds=60)],
        trend_rules=[
            {"metric": "cpu_percent", "kind": "variability", "limit": 20, "window_seconds": 300},
            {"metric": "cpu_percent", "kind": "sustained", "window_seconds": 600},
        ],
    )
    rig.run(600, lambda i: 60.0 + (i % 3))  # steady below the warning level: nothing
    assert rig.alerts() == []
    rig.run(300, lambda i: 20.0 if i % 2 else 80.0)  # swings of 60 points: variability
    names = {a.rule for a in rig.alerts()}
    assert "cpu_percent_variability" in names
    assert "cpu_percent_sustained" not in names

    rig2 = rig_factory(
        trend_rules=[{"metric": "cpu_percent", "kind": "sustained", "window_seconds": 600}]
    )
    # spikes above 70 never last 60 s (no threshold alert), but the average stays above 70
    before = {a.id for a in rig.alerts()}  # the same database: rig's alerts are there too
    rig2.run(900, lambda i: 95.0 if i % 50 < 40 else 20.0)
    assert {a.rule for a in rig2.alerts() if a.id not in before} == {"cpu_percent_sustained"}


def test_labelled_samples_get_one_alert_per_label_set(rig_factory):
    rig = rig_factory(rules=[ThresholdRule(metric="disk_percent", warning=85, for_seconds=0)])
    for _ in range(3):
        rig.engine.observe(
            rig.clock.advance(1),
            # the collector names its second disk 'disk_percent:/srv'
            {"disk_percent{path=/data}": 90.0, "disk_percent": 40.0, "disk_percent:/srv": 97.0},
        )
    by_path = {a.labels.get("path"): a for a in rig.alerts()}
    assert set(by_path) == {"/data", "/srv"}
    assert "path=/data" in by_path["/data"].message
    assert by_path["/data"].fingerprint != by_path["/srv"].fingerprint


def test_anomalies_open_warning_alerts_deduplicated_and_resolve_when_quiet(rig):
    t0 = rig.clock.now()
    first = rig.engine.raise_anomaly(t0, "memory_percent", "memory rose sharply", 71.0)
    again = rig.engine.raise_anomaly(rig.clock.advance(30), "memory_percent", "still odd", 72.0)
    assert first == again
    (alert,) = rig.alerts()
    assert (alert.rule, alert.severity, alert.status) == ("anomaly", "warning", "firing")
    assert rig.kinds() == ["firing"]
    rig.engine.tick(rig.clock.advance(rig.cfg.anomaly_resolve_seconds - 1))
    assert rig.alerts()[0].status == "firing"
    rig.engine.tick(rig.clock.advance(2))
    assert rig.alerts()[0].status == "resolved"
    assert rig.kinds() == ["firing", "resolved"]


def test_bad_silences_change_nothing(rig):
    rig.run(61, 80.0)
    (alert,) = rig.alerts()
    now = rig.clock.now()
    with rig.sessions() as s:
        cases = {
            "past": lambda: alerts.silence(
                s, str(alert.id), until=now - timedelta(minutes=5), now=now
            ),
            "both": lambda: alerts.silence(
                s,
                str(alert.id),
                until=now + timedelta(hours=1),
                duration=timedelta(hours=1),
                now=now,
            ),  # fmt: skip
            "unknown id": lambda: alerts.silence(s, "9999", duration=timedelta(hours=1), now=now),
            "unknown fingerprint": lambda: alerts.silence(
                s, "0123456789abcdef", duration=timedelta(hours=1), now=now
            ),
            "garbage": lambda: alerts.silence(s, "cpu!", duration=timedelta(hours=1), now=now),
        }
        messages = {}
        for name, call in cases.items():
            with pytest.raises(SctkError) as info:
                call()
            messages[name] = info.value.message
        s.rollback()
        assert s.scalars(select(AlertSilence)).all() == []
    assert "not in the future" in messages["past"] and "--for 2h" in messages["past"]
    assert "No alert with id 9999" in messages["unknown id"]
    assert "fingerprint 0123456789abcdef" in messages["unknown fingerprint"]
    for message in messages.values():
        assert message.count(". ") == 0 and message.endswith(".")
    with pytest.raises(SctkError, match="not a duration"):
        alerts.parse_duration("soon")
    with pytest.raises(SctkError, match="not an ISO time"):
        alerts.parse_until("tomorrow")


def test_two_engines_on_one_database_share_alerts_and_notices(rig):
    """Two API processes evaluating the same samples: one alert, one notice each time."""
    other = AlertEngine(rig.cfg, rig.sessions, rig.dispatcher, clock=rig.clock)
    for value, seconds in [(80.0, 61), (80.0, 3600), (10.0, 301)]:
        for _ in range(seconds):
            now = rig.clock.advance(1)
            rig.engine.observe(now, {"cpu_percent": value})
            other.observe(now, {"cpu_percent": value})
    assert [(a.severity, a.status) for a in rig.alerts()] == [("warning", "resolved")]
    assert rig.kinds() == ["firing", "reminder", "resolved"]


def test_an_alert_whose_series_stops_or_rule_goes_resolves(rig_factory):
    rig = rig_factory(rules=[ThresholdRule(metric="disk_percent", warning=85, for_seconds=0)])
    rig.engine.observe(rig.clock.advance(1), {"disk_percent:/mnt/usb": 95.0})
    assert [a.status for a in rig.alerts()] == ["firing"]
    rig.run(899, 40.0, metric="disk_percent")  # the USB disk is gone; the root disk is fine
    assert [a.status for a in rig.alerts()] == ["firing"]
    rig.run(1, 40.0, metric="disk_percent")
    assert [a.status for a in rig.alerts()] == ["resolved"]

    rig.engine.observe(rig.clock.advance(1), {"disk_percent": 99.0})
    # restarted with the disk rule removed from the settings
    rig.cfg = make_cfg(rules=[ThresholdRule(metric="cpu_percent", warning=70)])
    rig.restart()
    rig.run(901, 10.0)
    assert [a.status for a in rig.alerts()] == ["resolved", "resolved"]
    assert rig.kinds() == ["firing", "resolved", "firing", "resolved"]


def test_start_engine_follows_the_real_collector_and_detaches_on_close(settings):
    from sctk.monitoring.alert_engine import start_engine
    from sctk.monitoring.collector import Collector

    clock = ManualClock()
    # the real collector, ticked by hand, its system sampler replaced by a scripted load
    collector = Collector(
        lambda: {"cpu_percent": 99.0, "memory_percent": 20.0},
        clock=lambda: clock.advance(1),
    )
    eng = make_engine(settings)
    sessions = sessionmaker(eng, expire_on_commit=False)
    engine = start_engine(settings, sessions).attach(collector)
    try:
        assert [c.name for c in engine.dispatcher.channels] == ["log"]  # nothing else set up
        for _ in range(62):
            collector.tick()
    finally:
        engine.close()
    collector.tick()  # detached: no longer evaluated
    with sessions() as s:
        assert {a.severity for a in s.scalars(select(Alert))} == {"warning", "critical"}
        sent = s.scalars(select(NotificationAttempt)).all()
        assert [(n.channel, n.kind, n.ok) for n in sent] == [("log", "firing", True)]
    assert engine.open_alerts() and engine._detach == []
    eng.dispose()
