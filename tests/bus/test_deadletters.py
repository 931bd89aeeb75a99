"""Dead letters: replay (in this process, and through the CLI), purge, and bad input."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from sctk.bus import Bus, deadletters
from sctk.cli import main
from sctk.errors import SctkError
from sctk.security import audit_log
from sctk.storage.engine import session_scope
from sctk.storage.models import DeadLetter, utcnow
from tests.bus.conftest import MAX_ATTEMPTS
from tests.helpers import run_sctk, wait_until
from tests.security.conftest import assert_cli_error

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


class Flaky:
    """A handler that fails until it is fixed."""

    def __init__(self):
        self.fixed = False
        self.calls = 0
        self.received = []

    def __call__(self, envelope):
        self.calls += 1
        if not self.fixed:
            raise RuntimeError("the downstream service is down")
        self.received.append(envelope)


def make_dead_letter(
    bus: Bus, payload: dict | None = None, name: str = "flaky"
) -> tuple[Flaky, int, str]:
    flaky = Flaky()
    bus.subscribe("job.event", flaky, name)
    before = bus.stats["dead_lettered"]
    env = bus.publish("job.event", payload or {"job_id": 1, "seq": 1})
    wait_until(lambda: bus.stats["dead_lettered"] == before + 1, what="a dead letter")
    with session_scope(bus.engine) as session:
        dead_id = session.scalar(select(DeadLetter.id).where(DeadLetter.message_id == env.id))
    return flaky, dead_id, env.id


def _row(bus: Bus, dead_id: int) -> DeadLetter | None:
    with session_scope(bus.engine) as session:
        return session.get(DeadLetter, dead_id)


def test_replay_delivers_to_the_fixed_handler_only_and_marks_it(bus, backend):
    others = []
    bus.subscribe("job", others.append, "other")
    flaky, dead_id, original_id = make_dead_letter(bus, {"job_id": 5, "seq": 9})
    assert flaky.calls == MAX_ATTEMPTS and len(others) == 1
    flaky.fixed = True
    with session_scope(bus.engine) as session:
        [done] = deadletters.replay(session, bus, dead_id, actor="tests")
    assert bus.drain(10)
    [got] = flaky.received
    assert got.payload == {"job_id": 5, "seq": 9} and got.target == "flaky"
    assert got.id == done.message_id != original_id
    assert len(others) == 1  # addressed to the handler that failed, not to everyone again
    row = _row(bus, dead_id)
    assert row.replayed_at is not None
    with session_scope(bus.engine) as session:
        assert audit_log.entries(session, event="bus.dead_letter.replayed")[0].target == str(
            dead_id
        )
        with pytest.raises(SctkError, match=f"Dead letter {dead_id} was already replayed"):
            deadletters.replay(session, bus, dead_id)
        assert deadletters.replay(session, bus, "all") == []


@sqlite_only
def test_replay_after_a_key_rotation_re_signs_with_the_current_key(bus):
    flaky, dead_id, _ = make_dead_letter(bus)
    bus.keyring.begin_rotation()
    bus.keyring.finish_rotation()  # the key that signed the dead letter is gone
    flaky.fixed = True
    with session_scope(bus.engine) as session:
        deadletters.replay(session, bus, "all")
    assert bus.drain(10)
    assert [e.kid for e in flaky.received] == [bus.keyring.current_id] == [2]


@sqlite_only
def test_an_altered_dead_letter_is_not_replayed(bus):
    flaky, dead_id, _ = make_dead_letter(bus)
    flaky.fixed = True
    row = _row(bus, dead_id)
    with session_scope(bus.engine) as session:
        altered = dict(row.envelope, payload={"job_id": 666})
        session.execute(update(DeadLetter).where(DeadLetter.id == dead_id).values(envelope=altered))
    with session_scope(bus.engine) as session, pytest.raises(SctkError, match="fails verification"):
        deadletters.replay(session, bus, dead_id)
    assert bus.drain(10) and flaky.received == [] and _row(bus, dead_id).replayed_at is None


@sqlite_only
def test_purge_by_age_and_all(bus):
    flaky, first, _ = make_dead_letter(bus)
    flaky.fixed = True
    _, second, _ = make_dead_letter(bus, name="flaky-2")
    with session_scope(bus.engine) as session:
        session.execute(
            update(DeadLetter)
            .where(DeadLetter.id == first)
            .values(created_at=utcnow() - timedelta(days=8))
        )
    with session_scope(bus.engine) as session:
        assert deadletters.purge(session, timedelta(days=7)) == 1
    with session_scope(bus.engine) as session:
        assert [d.id for d in deadletters.list_dead(session)] == [second]
        assert deadletters.purge(session) == 1
        assert deadletters.list_dead(session) == []
    assert deadletters.parse_age("36h") == timedelta(hours=36)
    with pytest.raises(SctkError, match="Invalid age 'soon'"):
        deadletters.parse_age("soon")


def in_process(home, capsys, *args: str) -> tuple[int, str, str]:
    """The CLI's entry point in this process (quicker than a subprocess for what needs no
    process of its own): (exit code, stdout, stderr)."""
    try:
        main(["--home", str(home), *args])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@sqlite_only
def test_cli_list_replay_purge_and_bad_input(bus, home, capsys):
    _, dead_id, message_id = make_dead_letter(bus)
    result = run_sctk("bus", "dead-letters", "list", "--json", home=home)
    assert result.returncode == 0, result.stderr
    [listed] = json.loads(result.stdout)
    assert (listed["id"], listed["message_id"], listed["handler"]) == (dead_id, message_id, "flaky")
    assert listed["attempts"] == MAX_ATTEMPTS and listed["replayed_at"] is None
    code, out, _ = in_process(home, capsys, "bus", "dead-letters", "list")
    assert code == 0 and "flaky" in out and "RuntimeError" in out

    assert_cli_error(
        run_sctk("bus", "dead-letters", "replay", "999", home=home), "No dead letter 999"
    )
    # on SQLite the CLI's process does not run the service's handler: refused, not faked
    refused = run_sctk("bus", "dead-letters", "replay", str(dead_id), home=home)
    assert_cli_error(refused, "which does not run in this process")
    code, _, err = in_process(home, capsys, "bus", "dead-letters", "purge", "--older-than", "x")
    assert code == 1 and err.strip().startswith("Error: Invalid age 'x'; use a whole number")
    assert _row(bus, dead_id).replayed_at is None  # nothing changed by any of the above

    code, out, _ = in_process(home, capsys, "bus", "dead-letters", "purge", "--older-than", "7d")
    assert code == 0 and "Purged 0 dead letter(s)." in out
    gone = run_sctk("bus", "dead-letters", "purge", home=home)
    assert gone.returncode == 0 and "Purged 1 dead letter(s)." in gone.stdout
    assert _row(bus, dead_id) is None


@sqlite_only
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["x1"], "'x1' is not a dead letter id"),
        ([], "Give either one dead letter id or --all."),
        (["1", "--all"], "Give either one dead letter id or --all."),
    ],
)
def test_cli_replay_arguments_are_checked_first(home, capsys, args, fragment):
    code, _, err = in_process(home, capsys, "bus", "dead-letters", "replay", *args)
    assert code == 1 and err.startswith("Error: ") and fragment in err, err
    assert "\n" not in err.strip()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_cli_replay_reaches_the_handler_of_a_listening_process(bus, home):
    """The CLI runs in its own process; on PostgreSQL its replay reaches this one's handler."""
    flaky, dead_id, _ = make_dead_letter(bus, {"job_id": 2, "seq": 4})
    assert bus.listening.is_set()
    flaky.fixed = True
    result = run_sctk("bus", "dead-letters", "replay", str(dead_id), home=home)
    assert result.returncode == 0, result.stderr
    assert f"Replayed dead letter {dead_id} (job.event) to handler 'flaky'" in result.stdout
    wait_until(lambda: flaky.received, what="the replayed message")
    [got] = flaky.received
    assert got.payload == {"job_id": 2, "seq": 4} and got.id in result.stdout
    assert _row(bus, dead_id).replayed_at is not None
    again = run_sctk("bus", "dead-letters", "replay", "--all", home=home)
    assert again.returncode == 0 and "No dead letters to replay." in again.stdout
