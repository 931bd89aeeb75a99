"""The collector: samples at a fixed rate into the in-memory window, keeps 1-minute aggregates
in the database under a retention period, and tells subscribers about every sample.

    collector = Collector.from_settings(settings, engine)
    collector.subscribe(lambda now, sample: ...)   # called after each sample, on its thread
    collector.start()  ...  collector.stop()       # stop() stores the minute in progress

The clock and the sampler are injectable: a test drives `tick()` itself with a fake clock
and a scripted sampler, and gets exactly what it asks for, with no thread and no waiting.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from sctk.config import Settings
from sctk.monitoring import store
from sctk.monitoring.sampler import Sample, Sampler, SystemSampler
from sctk.monitoring.window import Window

log = logging.getLogger(__name__)

Callback = Callable[[datetime, Sample], None]
Clock = Callable[[], datetime]

AGGREGATE_SECONDS = 60
PRUNE_EVERY = timedelta(hours=1)
# aggregates kept in memory while the database cannot be reached (a day of one metric set)
MAX_PENDING = 24 * 60 * 20
# a failing subscriber is logged on its first failure and then once per this many
LOG_EVERY_FAILURES = 300

_running: Collector | None = None


def running() -> Collector | None:
    """The collector started in this process (by the served API), if any."""
    return _running


def disk_paths(settings: Settings) -> list[str]:
    """The configured paths, or the data directory when none is configured."""
    return list(settings.monitor.disk_paths) or [str(settings.home)]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Bucket:
    """Running avg/min/max/count of each metric within one bucket."""

    def __init__(self, start: datetime):
        self.start = start
        self.acc: dict[str, list[float]] = {}  # name -> [sum, min, max, count]

    def add(self, sample: Sample) -> None:
        for name, value in sample.items():
            if not math.isfinite(value):
                continue
            a = self.acc.get(name)
            if a is None:
                self.acc[name] = [value, value, value, 1]
            else:
                a[0] += value
                a[1] = min(a[1], value)
                a[2] = max(a[2], value)
                a[3] += 1

    def aggregates(self) -> list[store.Aggregate]:
        return [
            store.Aggregate(name, self.start, s / n, lo, hi, int(n))
            for name, (s, lo, hi, n) in self.acc.items()
        ]


class Collector:
    """Samples with SAMPLER every INTERVAL_SECONDS; see the module docstring."""

    def __init__(
        self,
        sampler: Sampler,
        *,
        interval_seconds: float = 1.0,
        window_seconds: float = 3600,
        retention_days: float = 90,
        engine: Engine | None = None,
        clock: Clock = _utcnow,
        aggregate_seconds: int = AGGREGATE_SECONDS,
    ):
        self.sampler = sampler
        self.interval = float(interval_seconds)
        self.window = Window(window_seconds, interval_seconds)
        self.retention = timedelta(days=retention_days)
        self.engine = engine
        self.clock = clock
        self.aggregate_seconds = aggregate_seconds
        self._subscribers: list[Callback] = []
        self._failures: dict[int, int] = {}
        self._bucket: _Bucket | None = None
        self._pending: list[store.Aggregate] = []
        self._pruned_at: datetime | None = None
        self._lock = threading.Lock()  # one tick at a time (thread vs. an explicit tick)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.sample_errors = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engine | None = None, **kwargs: Any
    ) -> Collector:
        m = settings.monitor
        kwargs.setdefault("sampler", None)
        sampler = kwargs.pop("sampler") or SystemSampler([Path(p) for p in disk_paths(settings)])
        return cls(
            sampler,
            interval_seconds=m.interval_seconds,
            window_seconds=m.window_seconds,
            retention_days=m.retention_days,
            engine=engine,
            **kwargs,
        )

    # --- subscribers ---------------------------------------------------------------------

    def subscribe(self, callback: Callback) -> Callable[[], None]:
        """Call CALLBACK(now, sample) after every sample; returns a function that unsubscribes.

        Callbacks run on the collector's thread, so they must be quick; an exception in one
        is logged and never stops collection or the other callbacks."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self, now: datetime, sample: Sample, subscribers: list[Callback]) -> None:
        for callback in subscribers:
            try:
                callback(now, sample)
            except Exception:
                n = self._failures[id(callback)] = self._failures.get(id(callback), 0) + 1
                if n == 1 or n % LOG_EVERY_FAILURES == 0:
                    log.exception("metrics subscriber %r failed (%d times so far)", callback, n)

    # --- one step --------------------------------------------------------------------------

    def tick(self) -> tuple[datetime, Sample] | None:
        """Take one sample: window, aggregates (stored when a minute ends), subscribers."""
        with self._lock:
            now = self.clock()
            try:
                sample = self.sampler()
            except Exception:
                self.sample_errors += 1
                if self.sample_errors == 1 or self.sample_errors % LOG_EVERY_FAILURES == 0:
                    log.exception("metrics sampling failed (%d times)", self.sample_errors)
                return None
            self.samples += 1
            self.window.add(now.timestamp(), sample)
            start = store.bucket_of(now, self.aggregate_seconds)
            if self._bucket is not None and self._bucket.start != start:
                self._pending.extend(self._bucket.aggregates())
                self._bucket = None
            if self._bucket is None:
                self._bucket = _Bucket(start)
            self._bucket.add(sample)
            subscribers = list(self._subscribers)
            if self._pending:
                self._persist(now)
        self._notify(now, sample, subscribers)
        return now, sample

    def _persist(self, now: datetime) -> None:
        if self.engine is None:
            self._pending.clear()
            return
        try:
            store.save(self.engine, self._pending)
            self._pending.clear()
        except Exception as exc:
            # the database may be back next minute: keep what we have, within bounds
            del self._pending[:-MAX_PENDING]
            log.warning("metric aggregates not stored yet (%s); will retry", exc)
            return
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            try:
                gone = store.prune(self.engine, now - self.retention)
                if gone:
                    log.info("pruned %d metric aggregates older than %s", gone, self.retention)
            except Exception as exc:
                log.warning("pruning metric aggregates failed: %s", exc)

    def flush(self) -> None:
        """Store the bucket in progress now (its count says how many samples it holds)."""
        with self._lock:
            if self._bucket is not None:
                self._pending.extend(self._bucket.aggregates())
                self._bucket = None
            if self._pending:
                self._persist(self.clock())

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        due = time.monotonic()
        while True:
            due += self.interval
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return
            self.tick()
            late = time.monotonic() - due
            if late > self.interval:
                # fell behind (a suspended machine, a slow database): skip, never burst
                due += self.interval * math.floor(late / self.interval)

    def start(self) -> Collector:
        """Sample on a daemon thread until stop(); the process's running() collector."""
        global _running
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sctk-collector", daemon=True)
        self._thread.start()
        _running = self
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sampling and store the minute in progress."""
        global _running
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if _running is self:
            _running = None
        self.flush()

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
