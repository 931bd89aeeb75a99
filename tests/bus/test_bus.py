"""The bus in one process: delivery, rejection, retries with backoff, dead letters."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from sctk.bus import Bus, InvalidEnvelope, get_bus
from sctk.bus.bus import type_matches
from sctk.storage.engine import session_scope
from sctk.storage.models import BusMessage, DeadLetter, utcnow
from tests.bus.conftest import MAX_ATTEMPTS
from tests.helpers import wait_until

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


def dead_letters(bus: Bus) -> list[DeadLetter]:
    with session_scope(bus.engine) as session:
        return list(session.scalars(select(DeadLetter).order_by(DeadLetter.id)))


def test_type_patterns():
    assert type_matches("job.event", "job.event")
    assert not type_matches("job.event", "job.events")
    assert all(type_matches(p, "job.event") for p in ("job", "job.", "job.*", "*"))
    assert not type_matches("job", "jobs.event")


@sqlite_only
def test_subscribers_get_matching_messages_by_type_and_target(bus):
    got: dict[str, list] = {"all": [], "jobs": [], "alerts": []}
    bus.subscribe("*", lambda e: got["all"].append(e.payload["n"]), "all")
    bus.subscribe("job", lambda e: got["jobs"].append(e.payload["n"]), "jobs")
    bus.subscribe("alert.fired", lambda e: got["alerts"].append(e.payload["n"]), "alerts")
    bus.publish("job.event", {"n": 1})
    bus.publish("alert.fired", {"n": 2})
    bus.publish("job.done", {"n": 3}, target="jobs")  # addressed to one subscriber
    assert bus.drain(10)
    assert got == {"all": [1, 2], "jobs": [1, 3], "alerts": [2]}
    assert bus.stats == {
        "published": 3,
        "delivered": 5,
        "rejected": 0,
        "retried": 0,
        "dead_lettered": 0,
        "replayed": 0,
        "expired": 0,
    }
    with pytest.raises(ValueError, match="already has a subscriber named 'jobs'"):
        bus.subscribe("x.y", print, "jobs")


@sqlite_only
def test_altered_and_unsigned_messages_are_rejected_and_counted(bus):
    got = []
    bus.subscribe("*", got.append, "all")
    good = bus.publish("job.event", {"job_id": 1, "seq": 1})
    tampered = good.to_dict() | {"payload": {"job_id": 1, "seq": 2}}
    with pytest.raises(InvalidEnvelope, match="signature does not match"):
        bus.publish(tampered)
    bad_signature = good.to_dict()
    last = bad_signature["signature"][-1]
    bad_signature["signature"] = bad_signature["signature"][:-1] + ("0" if last != "0" else "1")
    assert bus.receive(bad_signature) is None
    unsigned = good.to_dict()
    del unsigned["signature"]
    with pytest.raises(InvalidEnvelope, match="unsigned"):
        bus.publish(unsigned)
    assert bus.receive({**good.to_dict(), "signature": ""}) is None
    assert bus.drain(10)
    assert [e.id for e in got] == [good.id]
    assert bus.stats["rejected"] == 4 and bus.stats["published"] == 1


@sqlite_only
def test_a_slow_handler_does_not_hold_up_the_publisher(bus):
    entered, release = threading.Event(), threading.Event()

    def slow(_envelope):
        entered.set()
        release.wait(10)

    bus.subscribe("a.b", slow, "slow")
    bus.publish("a.b", {})
    assert entered.wait(10)
    bus.publish("a.b", {})  # returns while the handler still runs
    assert not release.is_set()
    release.set()
    assert bus.drain(10) and bus.stats["delivered"] == 2


def test_a_failing_handler_ends_as_a_dead_letter_after_max_attempts(bus, backend):
    attempts = []
    good = []

    def broken(envelope):
        attempts.append(envelope.id)
        raise RuntimeError(f"attempt {len(attempts)} failed")

    bus.subscribe("job.event", broken, "broken-handler")
    bus.subscribe("job.event", good.append, "good-handler")
    env = bus.publish("job.event", {"job_id": 3})
    wait_until(lambda: bus.stats["dead_lettered"] == 1, what="the dead letter")
    assert bus.drain(10)
    assert attempts == [env.id] * MAX_ATTEMPTS
    assert [e.id for e in good] == [env.id]  # the other handler got it once
    assert bus.stats["retried"] == MAX_ATTEMPTS - 1
    [dead] = dead_letters(bus)
    assert (dead.message_id, dead.type, dead.handler) == (env.id, "job.event", "broken-handler")
    assert dead.attempts == MAX_ATTEMPTS
    assert dead.last_error == f"RuntimeError: attempt {MAX_ATTEMPTS} failed"
    assert dead.envelope == env.to_dict() and dead.replayed_at is None


@sqlite_only
def test_a_handler_that_recovers_is_not_a_dead_letter(bus):
    calls = []

    def flaky(envelope):
        calls.append(envelope.id)
        if len(calls) < MAX_ATTEMPTS:
            raise ConnectionError("not yet")

    bus.subscribe("a.b", flaky, "flaky")
    bus.publish("a.b", {})
    assert bus.drain(10)
    assert len(calls) == MAX_ATTEMPTS and bus.stats["delivered"] == 1
    assert dead_letters(bus) == []


@sqlite_only
def test_retries_wait_with_doubling_backoff(settings):
    slow = settings.model_copy(
        update={"bus": settings.bus.model_copy(update={"backoff_seconds": 0.2})}
    )
    bus = Bus(slow).start()
    import time

    times = []

    def broken(_envelope):
        times.append(time.monotonic())
        raise RuntimeError("no")

    try:
        bus.subscribe("a.b", broken, "broken")
        bus.publish("a.b", {})
        wait_until(lambda: bus.stats["dead_lettered"] == 1, what="the dead letter")
    finally:
        bus.shutdown()
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(gaps) == MAX_ATTEMPTS - 1
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps


@sqlite_only
def test_shutting_down_keeps_a_message_still_waiting_for_its_retry(settings):
    slow = settings.model_copy(
        update={"bus": settings.bus.model_copy(update={"backoff_seconds": 60})}
    )
    bus = Bus(slow).start()
    bus.subscribe("a.b", lambda e: 1 / 0, "divider")
    env = bus.publish("a.b", {})
    wait_until(lambda: bus.stats["retried"] == 1, what="the first failure")
    bus.shutdown(timeout=0.1)
    [dead] = dead_letters(bus)
    assert (dead.message_id, dead.attempts) == (env.id, 1)
    assert dead.last_error.startswith("ZeroDivisionError")


@sqlite_only
def test_one_bus_per_database_in_a_process(settings):
    first = get_bus(settings)
    assert get_bus(settings) is first
    assert first.cross_process is False


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_publishing_prunes_old_messages(bus):
    with bus.engine.begin() as conn:
        conn.execute(
            insert(BusMessage).values(
                message_id="0" * 32,
                type="old.message",
                envelope={},
                created_at=utcnow() - timedelta(hours=2),
            )
        )
    env = bus.publish("new.message", {})
    with bus.engine.connect() as conn:
        ids = conn.scalars(select(BusMessage.message_id)).all()
        assert conn.scalar(select(func.count()).select_from(BusMessage)) == 1
    assert ids == [env.id]


def _forked_child(home: str) -> None:
    from pathlib import Path

    from sctk import config
    from sctk.bus import bus as bus_module

    inherited = list(bus_module._inherited)
    fresh = get_bus(config.load(Path(home)).settings)
    if not inherited or any(fresh is old for old in inherited):
        raise SystemExit(3)  # the parent's bus (threads gone, connections shared) was reused
    fresh.publish("test.forked", {"from": "child"})


def test_a_forked_child_makes_its_own_bus_and_leaves_the_parents_alone(settings, backend):
    import multiprocessing

    parent = get_bus(settings).start()
    got = []
    parent.subscribe("test", got.append, "collector")
    parent.publish("test.before", {})
    child = multiprocessing.get_context("fork").Process(
        target=_forked_child, args=(str(settings.home),)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    if backend == "postgres":  # the child's message reaches the parent through NOTIFY
        wait_until(lambda: any(e.type == "test.forked" for e in got), what="the child's message")
    parent.publish("test.after", {})  # the parent's bus still works after the child's exit
    wait_until(lambda: any(e.type == "test.after" for e in got), what="the parent's message")
    expected = ["test.before", "test.forked", "test.after"]
    if backend == "sqlite":
        expected.remove("test.forked")  # no cross-process delivery on SQLite
    assert [e.type for e in got] == expected


def test_the_bus_counters_are_exported_on_metrics(viewer_api):
    api = viewer_api
    bus = api.server.server.config.app.state.bus  # the served app's own bus
    envelope = bus.publish("test.counted", {})
    assert bus.receive(envelope.to_dict()) is None  # taken already: a replay, dropped
    r = api.http.get("/metrics", headers=api.headers("viewer"))
    assert r.status_code == 200, r.text
    assert 'sctk_bus_messages_total{outcome="replayed"} 1.0' in r.text
    assert 'sctk_bus_messages_total{outcome="expired"} 0.0' in r.text
