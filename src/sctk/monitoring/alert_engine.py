"""The alert engine: it turns samples into alerts (stored and operated on in
sctk.monitoring.alerts).

Lifecycle (modelled on Prometheus Alertmanager, simplified to one process):

- A threshold rule's condition must hold for `for_seconds` before its alert fires; a shorter
  excursion fires nothing.
- One alert per fingerprint (rule + metric + labels) and severity is open at a time: further
  crossings update it, they do not make new ones (deduplication).
- A firing alert resolves only after its condition stayed clear for `cooldown_seconds`. A
  crossing within that time is the same episode, so a flapping series keeps one alert and
  sends no new notification for it.
- The first notification goes out when the alert fires; then a reminder at most every
  `repeat_interval_seconds` until it is acknowledged; at resolution exactly one resolution
  notice (only if the firing was announced).
- A silence (until a time) keeps every notification of its fingerprint back, the resolution
  included. A firing critical alert inhibits the warning alert of the same fingerprint.
- Every step is an `alert_events` row; open alerts live in the database, so a restarted
  engine carries on where the previous one stopped (no second firing notice, no lost
  resolution).

The engine never waits for delivery: it hands notifications to a Dispatcher (notifiers.py)
whose per-channel threads do the sending.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from sctk.errors import ConfigError
from sctk.monitoring import incidents
from sctk.monitoring.clock import Clock, SystemClock
from sctk.monitoring.notifiers import Notification
from sctk.monitoring.rules import (
    AlertSettings,
    ThresholdRule,
    TrendRule,
    fingerprint,
    split_metric,
)
from sctk.storage.models import Alert

if TYPE_CHECKING:
    from sctk.config import Settings

from sctk.monitoring.alerts import (
    ANOMALY_RULE,
    EVENT_RULES,
    FIRING,
    RESOLVED,
    active_silence,
    event,
    fire,
)

log = logging.getLogger("sctk.alerts")
TREND_EVERY_SECONDS = 5.0  # how often trend rules are evaluated
RECHECK_SECONDS = 15.0  # how soon a silenced or acknowledged alert is looked at again
STALE_SECONDS = 900.0  # an alert whose rule gave no verdict this long (and the cooldown) ends


@dataclass
class _Cond:
    """A condition found true in this evaluation."""

    rule: str
    metric: str
    labels: dict[str, str]
    severity: str
    value: float
    threshold: float | None
    message: str


@dataclass
class _Live:
    """The engine's copy of an open alert (the database row is the truth across restarts)."""

    id: int
    fingerprint: str
    severity: str
    rule: str
    message: str
    started_at: datetime
    last_seen_at: datetime
    clear_since: datetime | None
    last_notified_at: datetime | None
    notified_count: int
    value: float | None
    anomaly: bool
    suppressed: str | None = None  # reason last recorded, so it is written once per change
    recheck_after: datetime | None = None  # a silenced/acknowledged alert is re-read rarely
    last_eval: datetime | None = None  # when its rule last gave a verdict on it
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Window:
    points: deque = field(default_factory=deque)  # (POSIX seconds, value)
    next_eval: float = 0.0


class AlertEngine:
    """Evaluates rules on samples and drives alerts through their lifecycle.

    `observe(now, sample)` is called by the collector (once a second); `raise_anomaly` by the
    anomaly detectors. Both are cheap when nothing changes: the database is written only on a
    transition or a notification.
    """

    def __init__(
        self,
        settings: AlertSettings,
        sessions: sessionmaker,
        dispatcher: Any | None = None,
        *,
        clock: Clock | None = None,
        known_metrics: Iterable[str] | None = None,
    ):
        known = settings.known_metrics() | set(known_metrics or ())
        for rule in [*settings.rules, *settings.trend_rules]:
            if rule.metric not in known:
                raise ConfigError(
                    f"Alert rule '{rule.name}' names the unknown metric '{rule.metric}'; use one "
                    f"of {', '.join(sorted(known))}, or declare it in alerts.app_metrics."
                )
        self.settings = settings
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._thresholds: dict[str, list[ThresholdRule]] = {}
        self._score_rules: dict[str, list[ThresholdRule]] = {}
        for rule in settings.rules:
            rules = self._score_rules if rule.on == "anomaly_score" else self._thresholds
            rules.setdefault(rule.metric, []).append(rule)
        self._trends: dict[str, list[TrendRule]] = {}
        for trend in settings.trend_rules:
            self._trends.setdefault(trend.metric, []).append(trend)
        self._windows: dict[tuple[str, str], _Window] = {}
        self._fps: dict[tuple[str, str], str] = {}
        self._pending: dict[tuple[str, str], datetime] = {}
        self._open: dict[tuple[str, str], _Live] = {}
        self._for: dict[str, float] = {r.name: r.for_seconds for r in settings.rules}
        self.listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._detach: list[Callable[[], None]] = []
        self.load()

    # -- state ------------------------------------------------------------------------------

    def load(self) -> int:
        """Read the open alerts from the database (at start, and after a restart)."""
        with self._lock, self.sessions() as session:
            self._open.clear()
            for a in session.scalars(select(Alert).where(Alert.status == FIRING)):
                self._open[(a.fingerprint, a.severity)] = _Live(
                    id=a.id,
                    fingerprint=a.fingerprint,
                    severity=a.severity,
                    rule=a.rule,
                    message=a.message,
                    started_at=a.started_at,
                    last_seen_at=a.last_seen_at,
                    clear_since=a.clear_since,
                    last_notified_at=a.last_notified_at,
                    notified_count=a.notified_count,
                    value=a.value,
                    anomaly=a.rule in EVENT_RULES,
                    fields={"metric": a.metric, **(a.labels or {})},
                )
            return len(self._open)

    def open_alerts(self) -> list[tuple[str, str, int]]:
        """(fingerprint, severity, alert id) of every alert the engine holds open."""
        with self._lock:
            return [(k[0], k[1], v.id) for k, v in self._open.items()]

    # -- evaluation -------------------------------------------------------------------------

    def _window(self, metric_key: str, labels: dict[str, str]) -> _Window:
        key = (metric_key, repr(sorted(labels.items())))
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window()
        return w

    def _fingerprint(self, rule: str, key: str, name: str, labels: dict[str, str]) -> str:
        fp = self._fps.get((rule, key))
        if fp is None:
            fp = self._fps[(rule, key)] = fingerprint(rule, name, labels)
        return fp

    def _evaluate_trend(
        self, trend: TrendRule, name: str, w: _Window, now: float
    ) -> tuple[bool, float, float] | None:
        """(true?, statistic, limit), or None until the window is covered."""
        if not w.points or now - w.points[0][0] < 0.9 * trend.window_seconds:
            return None
        cutoff = now - trend.window_seconds
        values = [v for t, v in w.points if t >= cutoff]
        n = len(values)
        if n < 2:
            return None
        mean = math.fsum(values) / n
        if trend.kind == "variability":
            stat = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / n)
            limit = trend.limit
        else:
            stat = mean
            limit = trend.limit if trend.limit is not None else self.settings.warning_level(name)
        if limit is None:
            return None
        return stat > limit, stat, limit

    def observe(self, now: datetime, sample: dict[str, float]) -> None:
        """Evaluate every rule on one sample taken at NOW."""
        if now.tzinfo is None:
            raise ValueError("observe() needs a timezone-aware time")
        with self._lock:
            evaluated: set[tuple[str, str]] = set()
            true: dict[tuple[str, str], _Cond] = {}
            for key, raw in sample.items():
                name, labels = split_metric(key)
                if name not in self._thresholds and name not in self._trends:
                    continue
                try:
                    value = float(raw)
                except (TypeError, ValueError):
                    continue
                if not math.isfinite(value):
                    continue
                where = "".join(f" {k}={v}" for k, v in sorted(labels.items()))
                rules = self._thresholds.get(name, ())
                self._check_levels(rules, key, name, labels, value, evaluated, true)
                trends = self._trends.get(name)
                if trends:
                    w = self._window(name, labels)
                    ts = now.timestamp()
                    w.points.append((ts, value))
                    longest = max(t.window_seconds for t in trends)
                    while w.points and ts - w.points[0][0] > longest:
                        w.points.popleft()
                    # a trend over minutes needs no verdict every second; between verdicts
                    # its alert keeps its state
                    if ts < w.next_eval:
                        continue
                    w.next_eval = ts + TREND_EVERY_SECONDS
                    for trend in trends:
                        result = self._evaluate_trend(trend, name, w, ts)
                        if result is None:
                            continue
                        fp = self._fingerprint(trend.name, key, name, labels)
                        evaluated.add((fp, trend.severity))
                        hit, stat, limit = result
                        if hit:
                            what = (
                                "standard deviation" if trend.kind == "variability" else "average"
                            )
                            true[(fp, trend.severity)] = _Cond(
                                trend.name, name, labels, trend.severity, stat, limit,
                                f"{name}{where}: {what} over {trend.window_seconds:g} s is "
                                f"{stat:.1f}, above {limit:g}",
                            )  # fmt: skip
            self._step(now, evaluated, true)

    @property
    def score_metrics(self) -> set[str]:
        """Metrics some rule watches the anomaly score of (the detectors' owner feeds
        their scores to ``observe_scores``)."""
        return set(self._score_rules)

    def observe_scores(self, now: datetime, scores: dict[str, float]) -> None:
        """Evaluate the anomaly-score rules on the scores the detectors gave at NOW."""
        if now.tzinfo is None:
            raise ValueError("observe_scores() needs a timezone-aware time")
        with self._lock:
            evaluated: set[tuple[str, str]] = set()
            true: dict[tuple[str, str], _Cond] = {}
            for key, score in scores.items():
                name, labels = split_metric(key)
                rules = self._score_rules.get(name)
                if rules and math.isfinite(score):
                    self._check_levels(rules, key, name, labels, score, evaluated, true)
            self._step(now, evaluated, true)

    def _check_levels(
        self,
        rules: Iterable[ThresholdRule],
        key: str,
        name: str,
        labels: dict[str, str],
        value: float,
        evaluated: set[tuple[str, str]],
        true: dict[tuple[str, str], _Cond],
    ) -> None:
        """Threshold RULES of one series on VALUE: the conditions evaluated and found true."""
        where = "".join(f" {k}={v}" for k, v in sorted(labels.items()))
        for rule in rules:
            fp = self._fingerprint(rule.name, key, name, labels)
            if rule.on == "anomaly_score":
                what, shown = f"the anomaly score of {name}{where}", f"{value:.3f}"
            else:
                what, shown = f"{name}{where}", f"{value:.1f}"
            for severity, level in rule.levels():
                evaluated.add((fp, severity))
                if rule.crossed(value, level):
                    true[(fp, severity)] = _Cond(
                        rule.name, name, labels, severity, value, level,
                        f"{what} is {shown}, {rule.op} the {severity} level {level:g}",
                    )  # fmt: skip

    def raise_anomaly(
        self,
        now: datetime,
        metric: str,
        message: str,
        value: float | None = None,
        labels: dict[str, str] | None = None,
        severity: str = "warning",
        rule: str = ANOMALY_RULE,
    ) -> int:
        """An anomaly detector's finding (or another event of EVENT_RULES, such as a failed
        maintenance task): open (or refresh) a warning alert; its id.

        The detectors debounce episodes themselves, so this fires at once; the alert resolves
        when no anomaly was raised for it for `alerts.anomaly_resolve_seconds`.
        """
        metric, found = split_metric(metric)  # a detector may name a labelled series
        labels = {**found, **(labels or {})}
        fp = fingerprint(rule, metric, labels)
        key = (fp, severity)
        cond = _Cond(rule, metric, labels, severity, value or 0.0, None, message)
        with self._lock:
            self._step(now, {key}, {key: cond}, anomaly=True)
            return self._open[key].id

    def anomaly_found(self, anomaly: Any) -> int:
        """raise_anomaly for an anomaly.Anomaly (metric, message, value, flagged epoch)."""
        now = datetime.fromtimestamp(anomaly.flagged, UTC)
        return self.raise_anomaly(now, anomaly.metric, anomaly.message, anomaly.value)

    def tick(self, now: datetime) -> None:
        """Time passing with no sample: resolutions of quiet anomalies, reminders."""
        with self._lock:
            self._step(now, set(), {})

    def _step(
        self,
        now: datetime,
        evaluated: set[tuple[str, str]],
        true: dict[tuple[str, str], _Cond],
        anomaly: bool = False,
    ) -> None:
        cfg = self.settings
        cooldown = timedelta(seconds=cfg.cooldown_seconds)
        notes: list[Notification] = []
        changes: list[Callable[[Session], None]] = []

        for key in evaluated:
            cond = true.get(key)
            live = self._open.get(key)
            if live is not None:
                live.last_eval = now
            if cond is not None:
                if live is not None:
                    live.last_seen_at = now
                    live.value = cond.value
                    if live.clear_since is not None:
                        live.clear_since = None
                        changes.append(self._update(live.id, clear_since=None))
                    continue
                since = self._pending.setdefault(key, now)
                wait = 0.0 if anomaly else self._for.get(cond.rule, 0.0)
                if (now - since).total_seconds() >= wait:
                    self._pending.pop(key, None)
                    changes.append(self._fire(key, cond, now))
            else:
                self._pending.pop(key, None)
                if live is not None and not live.anomaly and live.clear_since is None:
                    live.clear_since = now
                    changes.append(self._update(live.id, clear_since=now))

        if changes:
            self._commit(changes)
            changes = []

        # resolutions: clear for the cooldown (anomalies: not raised again for a while); an
        # alert no rule speaks of any more (rule removed, series gone) counts as clear
        quiet = timedelta(seconds=cfg.anomaly_resolve_seconds)
        stale = max(cooldown, timedelta(seconds=STALE_SECONDS))
        critical_fps = {fp for fp, sev in self._open if sev == "critical"}
        resolving = []
        for key, live in self._open.items():
            if live.last_eval is None:
                live.last_eval = now  # loaded at start: give its rule time to speak
            if live.anomaly:
                done = now - live.last_seen_at >= quiet
            elif live.clear_since is not None:
                done = now - live.clear_since >= cooldown
            else:
                done = not anomaly and now - live.last_eval >= stale
            if done:
                resolving.append((key, live))
        resolving.sort(key=lambda kv: kv[0][1] != "critical")  # criticals first
        for key, live in resolving:
            del self._open[key]
            changes.append(self._resolve(live, now, critical_fps, notes))

        # first notices and reminders
        repeat = timedelta(seconds=max(cfg.repeat_interval_seconds, cfg.cooldown_seconds))
        for live in list(self._open.values()):
            due = live.notified_count == 0 or (
                live.last_notified_at is not None and now - live.last_notified_at >= repeat
            )
            if not due or (live.recheck_after is not None and now < live.recheck_after):
                continue
            if live.severity == "warning" and live.fingerprint in critical_fps:
                if live.suppressed != "inhibited":  # known in memory: no query each second
                    live.suppressed = "inhibited"
                    changes.append(self._suppressed(live, now, "inhibited"))
                continue
            changes.append(self._maybe_notify(live, now, critical_fps, notes))
        if changes:
            self._commit(changes)
        for note in notes:
            self._send(note)

    # -- transitions (each returns a function run in one transaction) -------------------------

    def _commit(self, changes: list[Callable[[Session], None]]) -> None:
        try:
            with self.sessions() as session:
                for change in changes:
                    change(session)
                session.commit()
        except Exception:
            # the memory may now be ahead of the database: start again from what is stored
            # (a condition still true fires again on the next sample)
            log.exception("could not store alert changes; reloading the open alerts")
            try:
                self.load()
            except Exception:
                log.exception("could not reload the open alerts")
            raise

    def _forget(self, live: _Live) -> None:
        """Drop an alert someone else resolved (another process, an operator)."""
        key = (live.fingerprint, live.severity)
        if self._open.get(key) is live:
            del self._open[key]

    def _update(self, alert_id: int, **values: Any) -> Callable[[Session], None]:
        def run(session: Session) -> None:
            row = session.get(Alert, alert_id)
            if row is not None:
                for k, v in values.items():
                    setattr(row, k, v)

        return run

    def _fire(self, key: tuple[str, str], cond: _Cond, now: datetime) -> Callable[[Session], None]:
        live = _Live(
            id=0,
            fingerprint=key[0],
            severity=cond.severity,
            rule=cond.rule,
            message=cond.message,
            started_at=now,
            last_seen_at=now,
            clear_since=None,
            last_notified_at=None,
            notified_count=0,
            value=cond.value,
            anomaly=cond.rule in EVENT_RULES,
            fields={"metric": cond.metric, **cond.labels},
        )
        self._open[key] = live

        def run(session: Session) -> None:
            # another process evaluating the same rules may have fired it already: adopt it
            # rather than make a duplicate (one evaluating process is still the better set-up)
            found = session.scalar(
                select(Alert)
                .where(
                    Alert.fingerprint == key[0],
                    Alert.severity == key[1],
                    Alert.status == FIRING,
                )
                .limit(1)
            )
            if found is not None:
                live.id = found.id
                live.started_at = found.started_at
                live.notified_count = found.notified_count
                live.last_notified_at = found.last_notified_at
                return
            alert = fire(
                session,
                rule=cond.rule,
                metric=cond.metric,
                severity=cond.severity,
                message=cond.message,
                now=now,
                labels=cond.labels,
                value=cond.value,
                threshold=cond.threshold,
            )
            live.id = alert.id
            self._emit("alert.fired", {"alert_id": alert.id, "severity": cond.severity})

        return run

    def _suppression(
        self, session: Session, live: _Live, now: datetime, critical_fps: set[str]
    ) -> str | None:
        if live.severity == "warning" and live.fingerprint in critical_fps:
            return "inhibited"
        s = active_silence(session, live.fingerprint, now)
        if s is not None:
            return "silenced"
        return None

    def _note(self, live: _Live, kind: str, row: Alert | None) -> Notification:
        fields: dict[str, Any] = dict(live.fields)
        fields["severity"] = live.severity
        if live.value is not None:
            fields["value"] = round(live.value, 3)
        fields["since"] = live.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        text = live.message
        if kind == "resolved":
            text = f"resolved; was: {live.message}"
        return Notification(
            kind=kind,
            title=f"{live.rule} ({live.severity})",
            text=text,
            severity=live.severity,
            alert_id=live.id,
            fingerprint=live.fingerprint,
            fields=fields,
        )

    def _suppressed(self, live: _Live, now: datetime, reason: str) -> Callable[[Session], None]:
        def run(session: Session) -> None:
            event(session, live.id, "suppressed", now, reason=reason)

        return run

    def _maybe_notify(
        self, live: _Live, now: datetime, critical_fps: set[str], notes: list[Notification]
    ) -> Callable[[Session], None]:
        def run(session: Session) -> None:
            row = session.get(Alert, live.id, with_for_update=True)
            if row is None or row.status != FIRING:
                self._forget(live)
                return
            # the row is the truth when several processes evaluate: no second notice
            live.notified_count = max(live.notified_count, row.notified_count)
            if row.last_notified_at and (
                live.last_notified_at is None or row.last_notified_at > live.last_notified_at
            ):
                live.last_notified_at = row.last_notified_at
            repeat = timedelta(
                seconds=max(self.settings.repeat_interval_seconds, self.settings.cooldown_seconds)
            )
            if live.last_notified_at is not None and now - live.last_notified_at < repeat:
                return
            reason = self._suppression(session, live, now, critical_fps)
            if reason is None and live.notified_count > 0 and row.acknowledged_at is not None:
                reason = "acknowledged"
            if reason is not None:
                live.recheck_after = now + timedelta(seconds=RECHECK_SECONDS)
                if live.suppressed != reason:
                    live.suppressed = reason
                    event(session, live.id, "suppressed", now, reason=reason)
                return
            live.suppressed = None
            live.recheck_after = None
            kind = "firing" if live.notified_count == 0 else "reminder"
            live.notified_count += 1
            live.last_notified_at = now
            row.notified_count = live.notified_count
            row.last_notified_at = now
            row.value = live.value
            row.last_seen_at = live.last_seen_at
            event(session, live.id, "notified", now, notice=kind)
            notes.append(self._note(live, kind, row))

        return run

    def _resolve(
        self, live: _Live, now: datetime, critical_fps: set[str], notes: list[Notification]
    ) -> Callable[[Session], None]:
        def run(session: Session) -> None:
            # locked (PostgreSQL): two processes resolving at once send one notice
            row = session.get(Alert, live.id, with_for_update=True)
            if row is None or row.status != FIRING:
                return
            row.status = RESOLVED
            row.resolved_at = now
            row.clear_since = live.clear_since
            row.last_seen_at = live.last_seen_at
            event(session, live.id, "resolved", now)
            if row.incident_id is not None:
                incidents.add_event(
                    session,
                    row.incident_id,
                    "alert.resolved",
                    f"Alert {row.id} resolved: {row.message}",
                    details={"alert_id": row.id},
                    at=now,
                )
            self._emit("alert.resolved", {"alert_id": row.id, "severity": row.severity})
            if live.notified_count == 0:
                return  # nobody was told it fired: no resolution notice either
            reason = self._suppression(session, live, now, critical_fps)
            if reason is not None:
                event(session, live.id, "suppressed", now, reason=reason, notice="resolved")
                return
            row.notified_count += 1
            row.last_notified_at = now
            event(session, live.id, "notified", now, notice="resolved")
            notes.append(self._note(live, "resolved", row))

        return run

    def _send(self, note: Notification) -> None:
        if self.dispatcher is None:
            return
        try:
            self.dispatcher.submit(note)
        except Exception:  # never let delivery trouble stop the evaluation
            log.exception("could not hand a notification to the dispatcher")

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(kind, data)
            except Exception:
                log.exception("alert listener failed on %s", kind)

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening to the collector, let queued notifications go out (up to TIMEOUT),
        then stop the dispatcher's workers."""
        for undo in self._detach:
            undo()
        self._detach.clear()
        if self.dispatcher is not None:
            self.dispatcher.drain(timeout)
            self.dispatcher.stop(timeout)

    def attach(self, collector: Any) -> AlertEngine:
        """Evaluate every sample of COLLECTOR (anything with `subscribe(callback)` returning
        an unsubscribe function); `close` detaches."""
        self._detach.append(collector.subscribe(self.observe))
        return self


def start_engine(
    settings: Settings,
    sessions: sessionmaker,
    *,
    clock: Clock | None = None,
    known_metrics: Iterable[str] | None = None,
) -> AlertEngine:
    """The engine of a running service: the configured channels, each on its own worker,
    attempts recorded in the database. In the app's lifespan:

        app.state.alerts = start_engine(settings, app.state.sessionmaker).attach(collector)
        ...  # anomalies: app.state.alerts.anomaly_found(anomaly)
        app.state.alerts.close()  # at shutdown
    """
    from sctk.monitoring.notifiers import Dispatcher, configured_channels, db_recorder
    from sctk.security.keyring import Keyring

    cfg = settings.alerts
    ring = Keyring.load(settings.home)
    with sessions() as session:
        channels = configured_channels(cfg, session, ring)
    dispatcher = Dispatcher(
        channels,
        record=db_recorder(sessions),
        max_attempts=cfg.max_attempts,
        backoff_seconds=cfg.backoff_seconds,
    )
    try:
        return AlertEngine(cfg, sessions, dispatcher, clock=clock, known_metrics=known_metrics)
    except BaseException:
        dispatcher.stop()
        raise
