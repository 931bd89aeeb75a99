"""Across processes on PostgreSQL: a publisher in a subprocess, a subscriber here."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import insert, text

from sctk.bus import sign
from sctk.storage.models import BusMessage, utcnow
from tests.bus.conftest import python
from tests.helpers import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("backend", ["postgres"])]

PUBLISHER = """
import json, sys
from pathlib import Path
from sctk import config
from sctk.bus import get_bus
bus = get_bus(config.load(Path(sys.argv[1])).settings, source="publisher")
for n in range(3):
    bus.publish("test.ping", {"n": n})
print(json.dumps(bus.stats))
"""


def test_a_message_published_in_another_process_arrives_through_notify(bus, home):
    got = []
    bus.subscribe("test", got.append, "collector")
    assert bus.listening.is_set()
    result = python(PUBLISHER, str(home))
    assert json.loads(result.stdout)["published"] == 3
    wait_until(lambda: len(got) == 3, what="three messages from the other process")
    assert [e.payload["n"] for e in got] == [0, 1, 2]
    assert {e.source for e in got} == {"publisher"}
    assert bus.stats["rejected"] == 0 and bus.stats["published"] == 0


def test_own_messages_are_delivered_once(bus):
    got = []
    bus.subscribe("test.ping", got.append, "collector")
    bus.publish("test.ping", {})
    second = bus.publish("test.ping", {})
    # the NOTIFY of each comes back to this process's listener, which skips it
    wait_until(lambda: len(got) == 2, what="local delivery")
    marker = []
    bus.subscribe("test.marker", marker.append, "marker")
    with bus.engine.begin() as conn:  # a message from "elsewhere" that follows ours
        env = sign(bus.keyring, "test.marker", {}, source="elsewhere")
        _store_and_notify(conn, env.to_dict())
    wait_until(lambda: marker, what="the marker")
    assert [e.id for e in got][-1] == second.id and len(got) == 2


def _store_and_notify(conn, envelope: dict, row_id: str | None = None) -> None:
    """ENVELOPE into bus_messages (under ROW_ID, else its own id) and a NOTIFY naming it."""
    row_id = row_id or envelope["id"]
    conn.execute(
        insert(BusMessage).values(
            message_id=row_id,
            type=envelope["type"],
            envelope=envelope,
            created_at=utcnow(),
        )
    )
    conn.execute(text("SELECT pg_notify('sctk_bus', :id)"), {"id": row_id})


def test_a_forged_message_in_the_table_is_rejected_and_counted(bus):
    got = []
    bus.subscribe("test", got.append, "collector")
    forged = sign(bus.keyring, "test.ping", {"n": 1}, source="elsewhere").to_dict()
    forged["payload"] = {"n": 2}
    unsigned = sign(bus.keyring, "test.ping", {"n": 3}, source="elsewhere").to_dict()
    unsigned["signature"] = ""
    good = sign(bus.keyring, "test.ping", {"n": 4}, source="elsewhere").to_dict()
    with bus.engine.begin() as conn:
        for envelope in (forged, unsigned, good):
            _store_and_notify(conn, envelope)
    wait_until(lambda: got and bus.stats["rejected"] == 2, what="the good message")
    assert [e.payload["n"] for e in got] == [4]


def test_a_replayed_envelope_is_delivered_once_and_an_old_one_not_at_all(bus, home, settings):
    got = []
    bus.subscribe("test", got.append, "collector")
    # a message from another process arrives, as it should
    result = python(PUBLISHER, str(home))
    assert json.loads(result.stdout)["published"] == 3
    wait_until(lambda: len(got) == 3, what="three messages from the other process")
    with bus.engine.connect() as conn:
        captured = conn.execute(
            text("SELECT envelope FROM bus_messages ORDER BY id LIMIT 1")
        ).scalar_one()
    # someone who can write to the bus table sends the captured envelope again, under
    # another row id (its signature still holds: the id it carries is the original's)
    old = sign(
        bus.keyring,
        "test.ping",
        {"n": 99},
        source="elsewhere",
        created_at=(utcnow() - timedelta(seconds=2 * settings.bus.max_age_seconds)).isoformat(),
    ).to_dict()
    fresh = sign(bus.keyring, "test.ping", {"n": 100}, source="elsewhere").to_dict()
    with bus.engine.begin() as conn:
        _store_and_notify(conn, captured, row_id="f" * 32)
        _store_and_notify(conn, old)  # signed, but created long ago
        _store_and_notify(conn, fresh)  # and a good one after them, to wait for
    wait_until(lambda: len(got) == 4, what="the fresh message")
    assert [e.payload["n"] for e in got] == [0, 1, 2, 100]
    assert bus.stats["replayed"] == 1 and bus.stats["expired"] == 1
    assert bus.stats["rejected"] == 0
    # the same holds for an envelope handed to the bus directly
    assert bus.receive(fresh) is None
    assert bus.stats["replayed"] == 2 and len(got) == 4
