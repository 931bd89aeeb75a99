"""Across processes on PostgreSQL: a publisher in a subprocess, a subscriber here."""

from __future__ import annotations

import json

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


def _store_and_notify(conn, envelope: dict) -> None:
    conn.execute(
        insert(BusMessage).values(
            message_id=envelope["id"],
            type=envelope["type"],
            envelope=envelope,
            created_at=utcnow(),
        )
    )
    conn.execute(text("SELECT pg_notify('sctk_bus', :id)"), {"id": envelope["id"]})


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
