"""The collector: window bounds, 1-minute aggregates stored on SQLite and PostgreSQL,
retention, subscribers, and a real psutil sample."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from sctk import config
from sctk.monitoring import store
from sctk.monitoring.collector import Collector, disk_paths
from sctk.monitoring.sampler import SystemSampler, metric_names, sample_once
from sctk.monitoring.window import Window
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import MetricAggregate
from tests.helpers import wait_until

T0 = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = T0):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Scripted:
    """A sampler returning cpu_percent = 0, 1, 2, ... and a constant memory_percent."""

    def __init__(self):
        self.i = -1

    def __call__(self) -> dict[str, float]:
        self.i += 1
        return {"cpu_percent": float(self.i), "memory_percent": 50.0}


@pytest.fixture
def engine(settings):
    eng = make_engine(settings)
    yield eng
    eng.dispose()


def rows(engine, metric: str) -> list[MetricAggregate]:
    with session_scope(engine) as s:
        return list(
            s.scalars(
                select(MetricAggregate)
                .where(MetricAggregate.metric == metric)
                .order_by(MetricAggregate.bucket_start)
            )
        )


def run(collector: Collector, clock: FakeClock, ticks: int, step: float = 1.0) -> None:
    for _ in range(ticks):
        collector.tick()
        clock.advance(step)


def test_window_keeps_exactly_its_span_and_bounded_memory():
    window = Window(window_seconds=60, interval_seconds=1)
    window.add(0.0, {"a": 0.0})
    size_after_first = window.nbytes()
    for t in range(1, 500):
        window.add(float(t), {"a": float(t)})
    times, values = window.series("a")
    assert len(times) == 60
    assert times[0] == 440.0 and times[-1] == 499.0
    assert list(values) == [float(t) for t in range(440, 500)]
    assert window.nbytes() == size_after_first == 60 * 16
    assert window.latest() == {"a": (499.0, 499.0)}
    since_times, _ = window.series("a", since=490.0)
    assert list(since_times) == [float(t) for t in range(490, 500)]
    assert window.series("missing")[0].size == 0


def test_window_drops_points_older_than_its_span_after_a_gap():
    window = Window(window_seconds=10, interval_seconds=1)
    for t in range(5):
        window.add(float(t), {"a": 1.0})
    window.add(100.0, {"a": 2.0})  # the sampler stalled for 95 s
    times, values = window.series("a")
    assert list(times) == [100.0] and list(values) == [2.0]


def test_one_hour_window_at_one_hertz(settings):
    clock = FakeClock()
    collector = Collector(Scripted(), interval_seconds=1, window_seconds=3600, clock=clock)
    run(collector, clock, 4000)
    times, values = collector.window.series("cpu_percent")
    assert len(values) == 3600
    assert values[0] == 400.0 and values[-1] == 3999.0
    assert times[-1] - times[0] == 3599.0
    assert collector.window.capacity == 3600


def test_aggregates_per_minute_are_stored_and_merged(settings, engine):
    clock = FakeClock()
    collector = Collector(Scripted(), engine=engine, clock=clock)
    run(collector, clock, 150)  # 12:00:00 .. 12:02:29
    stored = rows(engine, "cpu_percent")
    # two complete minutes are stored; the third is still in progress
    assert [r.bucket_start for r in stored] == [T0, T0 + timedelta(minutes=1)]
    first, second = stored
    assert (first.count, first.min, first.max, first.avg) == (60, 0.0, 59.0, 29.5)
    assert (second.count, second.min, second.max, second.avg) == (60, 60.0, 119.0, 89.5)
    assert [r.avg for r in rows(engine, "memory_percent")] == [50.0, 50.0]

    collector.flush()  # as at shutdown: the partial minute is kept, with its sample count
    third = rows(engine, "cpu_percent")[2]
    assert third.bucket_start == T0 + timedelta(minutes=2)
    assert (third.count, third.min, third.max) == (30, 120.0, 149.0)

    # a restart (or a second API process) within the same minute merges into the row
    again = Collector(lambda: {"cpu_percent": 1000.0}, engine=engine, clock=clock)
    run(again, clock, 10)  # 12:02:30 .. 12:02:39
    again.flush()
    merged = rows(engine, "cpu_percent")[2]
    assert merged.count == 40
    assert merged.max == 1000.0 and merged.min == 120.0
    assert merged.avg == pytest.approx((134.5 * 30 + 1000.0 * 10) / 40)


def test_retention_prunes_old_aggregates(settings, engine):
    old = store.Aggregate("cpu_percent", T0 - timedelta(days=91), 1.0, 1.0, 1.0, 60)
    kept = store.Aggregate("cpu_percent", T0 - timedelta(days=89), 2.0, 2.0, 2.0, 60)
    store.save(engine, [old, kept])
    clock = FakeClock()
    collector = Collector(Scripted(), engine=engine, clock=clock, retention_days=90)
    run(collector, clock, 61)  # the first stored minute prunes
    starts = [r.bucket_start for r in rows(engine, "cpu_percent")]
    assert starts == [kept.bucket_start, T0]


def test_subscribers_get_every_sample_and_a_failing_one_stops_nothing(settings, caplog):
    clock = FakeClock()
    collector = Collector(Scripted(), clock=clock)
    got: list[tuple[datetime, float]] = []

    def broken(now, sample):
        raise RuntimeError("subscriber bug")

    collector.subscribe(broken)
    unsubscribe = collector.subscribe(lambda now, sample: got.append((now, sample["cpu_percent"])))
    with caplog.at_level(logging.ERROR, logger="sctk.monitoring.collector"):
        run(collector, clock, 3)
    assert got == [(T0, 0.0), (T0 + timedelta(seconds=1), 1.0), (T0 + timedelta(seconds=2), 2.0)]
    assert collector.samples == 3
    failures = [r for r in caplog.records if "subscriber" in r.getMessage()]
    assert len(failures) == 1  # logged once, not once a second
    unsubscribe()
    run(collector, clock, 1)
    assert len(got) == 3


def test_a_failing_sampler_is_skipped_and_collection_goes_on(settings, caplog):
    calls = iter([{"cpu_percent": 1.0}, OSError("proc gone"), {"cpu_percent": 3.0}])

    def sampler():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    clock = FakeClock()
    collector = Collector(sampler, clock=clock)
    with caplog.at_level(logging.ERROR, logger="sctk.monitoring.collector"):
        run(collector, clock, 3)
    assert collector.samples == 2 and collector.sample_errors == 1
    assert list(collector.window.series("cpu_percent")[1]) == [1.0, 3.0]
    assert any("sampling failed" in r.getMessage() for r in caplog.records)


def test_a_real_sample(settings):
    names = metric_names(disk_paths(settings))
    sample = sample_once(disk_paths(settings), over_seconds=0.1)
    assert list(sample) == names
    for name in ("cpu_percent", "memory_percent", "disk_percent"):
        assert 0.0 <= sample[name] <= 100.0, (name, sample[name])
    assert sample["memory_percent"] > 0.0
    assert sample["sctk_rss_bytes"] > 10 * 2**20  # this test process alone is larger
    assert sample["net_sent_bytes_per_s"] >= 0 and sample["net_recv_bytes_per_s"] >= 0
    assert sample["load1"] >= 0


def test_extra_disk_paths_are_named_by_path(settings, tmp_path):
    s = config.load(settings.home, {"monitor": {"disk_paths": [str(settings.home), "/"]}}).settings
    sample = SystemSampler(disk_paths(s))()
    assert "disk_percent" in sample and "disk_percent:/" in sample


def test_own_cpu_counts_work_done_in_this_process(settings):
    sampler = SystemSampler([settings.home])
    stop = threading.Event()

    def burn():
        while not stop.is_set():
            sum(i * i for i in range(10_000))

    thread = threading.Thread(target=burn)
    thread.start()
    try:
        # polled: CPU time is accounted in ticks, so the first readings may still be 0
        wait_until(lambda: sampler()["sctk_cpu_percent"] > 5.0, timeout=10, interval=0.2)
    finally:
        stop.set()
        thread.join()


def test_the_thread_samples_and_stop_stores_the_minute(settings, engine):
    s = config.load(settings.home, {"monitor": {"interval_seconds": 0.1}}).settings
    collector = Collector.from_settings(s, engine).start()
    try:
        assert collector.is_running
        wait_until(lambda: collector.samples >= 5, timeout=20, what="five samples")
    finally:
        collector.stop()
    assert not collector.is_running
    cpu = rows(engine, "cpu_percent")
    assert cpu and sum(r.count for r in cpu) == collector.samples
    assert {r.metric for r in _all(engine)} == set(metric_names(disk_paths(s)))


def _all(engine) -> list[MetricAggregate]:
    with session_scope(engine) as s:
        return list(s.scalars(select(MetricAggregate)))
