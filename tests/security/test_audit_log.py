"""The hash-chained audit log: appends, tamper detection, concurrency, listing, the CLI."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text, update

from sctk.errors import SctkError
from sctk.security import audit_log
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import AuditEntry, User
from tests.helpers import run_sctk


@pytest.fixture
def engine(settings):
    eng = make_engine(settings)
    yield eng
    eng.dispose()


def _append(engine, count: int) -> list[AuditEntry]:
    made = []
    with session_scope(engine) as s:
        for i in range(count):
            made.append(
                audit_log.record(
                    s,
                    audit_log.LOGIN_OK if i % 2 else audit_log.USER_CREATED,
                    actor=f"user{i}",
                    target=f"target{i}",
                    client="127.0.0.1",
                    details={"i": i, "note": "café ☕", "ratio": i / 3, "tags": ["a", "b"]},
                )
            )
    return made


def _verify(engine, **kwargs) -> audit_log.VerifyReport:
    with session_scope(engine) as s:
        return audit_log.verify(s, **kwargs)


def _tamper(engine, *statements: tuple[str, dict]) -> None:
    """Raw SQL, as an attacker with database access would write it."""
    with engine.begin() as conn:
        for sql, params in statements:
            conn.execute(text(sql), params)


def _cli_verify(home, *extra: str):
    return run_sctk("audit-log", "verify", *extra, home=home)


def test_the_old_module_name_is_the_same_audit_log(engine):
    # sctk.security.audit is kept for one release: code importing it writes the same chain
    from sctk.security import audit

    assert audit is audit_log
    before = _verify(engine).checked
    with session_scope(engine) as s:
        audit.record(s, audit.USER_CREATED, actor="old-name", target="t")
    _append(engine, 2)
    report = _verify(engine)
    assert report.ok and report.checked == before + 3


# --- appending and verifying ---------------------------------------------------------------


def test_appends_form_a_verified_chain_that_survives_a_round_trip(engine, home):
    written = _append(engine, 5)
    written_hashes = [(e.seq, e.at, e.hash) for e in written]

    with session_scope(engine) as s:
        stored = list(s.scalars(select(AuditEntry).order_by(AuditEntry.seq)))
    assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
    assert stored[0].prev_hash == audit_log.GENESIS_HASH
    for before, after in zip(stored, stored[1:], strict=False):
        assert after.prev_hash == before.hash
    for entry, (seq, at, digest) in zip(stored, written_hashes, strict=True):
        # time comes back aware, in UTC, to the microsecond, so the hash still matches
        assert entry.at.tzinfo is not None and entry.at.utcoffset() == timedelta(0)
        assert (entry.seq, entry.at, entry.hash) == (seq, at, digest)
        assert audit_log.entry_hash(entry) == entry.hash
    assert stored[2].details == {"i": 2, "note": "café ☕", "ratio": 2 / 3, "tags": ["a", "b"]}

    report = _verify(engine)
    assert report.ok and report.problem is None
    assert (report.checked, report.head_seq, report.head_hash) == (5, 5, stored[-1].hash)
    assert "5 entries checked" in report.summary and stored[-1].hash in report.summary

    result = _cli_verify(home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == report.summary


def test_empty_log_verifies_as_intact(engine, home):
    report = _verify(engine)
    assert report.ok and report.checked == 0 and report.head_hash == audit_log.GENESIS_HASH
    result = _cli_verify(home, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_record_keeps_what_the_columns_hold_and_rejects_malformed_input(engine):
    with session_scope(engine) as s:
        entry = audit_log.record(s, "config.changed", actor="x" * 100, client="c" * 90)
    assert len(entry.actor) == 64 and len(entry.client) == 64
    assert _verify(engine).ok  # the hash covers the cut values the database keeps

    bad_calls = [
        lambda s: audit_log.record(s, "Login.OK"),
        lambda s: audit_log.record(s, "login"),
        lambda s: audit_log.record(s, "login..ok"),
        lambda s: audit_log.record(s, "login.ok "),
        lambda s: audit_log.record(s, "login.ok", outcome="Not OK!"),
        lambda s: audit_log.record(s, "login.ok", details={"when": datetime.now(UTC)}),
        lambda s: audit_log.record(s, "login.ok", details={"x": float("nan")}),
        lambda s: audit_log.record(s, "login.ok", details=["not", "a", "dict"]),
    ]
    for call in bad_calls:
        with pytest.raises(SctkError), session_scope(engine) as s:
            call(s)
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 1


def test_record_joins_the_callers_transaction(engine):
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        audit_log.record(s, audit_log.TOKEN_CREATED, actor="alice")
        raise RuntimeError("the caller's operation failed")
    with session_scope(engine) as s:
        assert s.scalar(select(func.count()).select_from(AuditEntry)) == 0
        audit_log.record(s, audit_log.TOKEN_CREATED, actor="alice")
    assert _verify(engine).checked == 1


# --- tampering -----------------------------------------------------------------------------


def test_changed_row_is_named(engine, home):
    _append(engine, 5)
    _tamper(engine, ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3", {}))

    report = _verify(engine)
    assert not report.ok and report.broken_seq == 3 and report.checked == 2
    assert report.problem == ("entry seq 3 was modified: its content no longer matches its hash.")
    result = _cli_verify(home)
    assert result.returncode == 1
    assert "entry seq 3 was modified" in result.stdout

    # details changed the same way, on a row before it: the first break is named
    _tamper(engine, ("UPDATE audit_log SET details = :d WHERE seq = 2", {"d": '{"i": 99}'}))
    assert _verify(engine).broken_seq == 2


def test_changed_row_with_recomputed_hash_breaks_the_next_link(engine, home):
    _append(engine, 5)
    with session_scope(engine) as s:
        row = s.scalar(select(AuditEntry).where(AuditEntry.seq == 3))
        forged = audit_log.compute_hash(
            row.prev_hash, seq=3, at=row.at, event=row.event, actor="mallory",
            target=row.target, client=row.client, outcome=row.outcome, details=row.details,
        )  # fmt: skip
    _tamper(
        engine,
        ("UPDATE audit_log SET actor = 'mallory', hash = :h WHERE seq = 3", {"h": forged}),
    )

    report = _verify(engine)
    assert not report.ok and report.broken_seq == 3
    assert report.problem == (
        "entry seq 3 was replaced or rewritten: its hash changed, so entry seq 4 no longer "
        "links to it."
    )
    result = _cli_verify(home)
    assert result.returncode == 1 and "entry seq 3 was replaced" in result.stdout


def test_deleted_row_is_named(engine, home):
    _append(engine, 5)
    _tamper(engine, ("DELETE FROM audit_log WHERE seq = 3", {}))

    report = _verify(engine)
    assert not report.ok and report.broken_seq == 3 and report.checked == 2
    assert report.problem == "entry seq 3 is missing: the chain jumps from seq 2 to 4."
    result = _cli_verify(home)
    assert result.returncode == 1
    assert "entry seq 3 is missing: the chain jumps from seq 2 to 4." in result.stdout

    result = _cli_verify(home, "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["broken_seq"] == 3 and data["head_seq"] == 2


def test_deleted_rows_at_the_start_and_renumbered_rows_are_named(engine):
    _append(engine, 5)
    _tamper(engine, ("DELETE FROM audit_log WHERE seq IN (1, 2)", {}))
    report = _verify(engine)
    assert report.broken_seq == 1
    assert report.problem == "entries seq 1 to 2 are missing: the chain starts at seq 3."

    # closing the gap by renumbering changes what the later rows' hashes cover
    _tamper(engine, ("UPDATE audit_log SET seq = seq - 2", {}))
    report = _verify(engine)
    assert report.broken_seq == 1
    assert report.problem == (
        "entry seq 1 was modified: its content no longer matches its hash, and the entry it "
        "linked back to is no longer in the log."
    )


def _forge_after(engine, seq: int) -> None:
    """Make room after SEQ by renumbering later rows, then slip in a self-consistent row."""
    with session_scope(engine) as s:
        anchor = s.scalar(select(AuditEntry).where(AuditEntry.seq == seq))
        forged_hash = audit_log.compute_hash(
            anchor.hash, seq=seq + 1, at=anchor.at, event="user.role_changed",
            actor="mallory", target="mallory", client=anchor.client, outcome="ok",
            details=anchor.details,
        )  # fmt: skip
    _tamper(
        engine,
        # two steps: PostgreSQL checks the unique seq row by row within one UPDATE
        ("UPDATE audit_log SET seq = seq + 1000 WHERE seq > :s", {"s": seq}),
        ("UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000", {}),
        (
            "INSERT INTO audit_log (seq, at, event, actor, target, client, outcome, details, "
            "prev_hash, hash) SELECT :new, at, 'user.role_changed', 'mallory', 'mallory', "
            "client, 'ok', details, hash, :h FROM audit_log WHERE seq = :s",
            {"new": seq + 1, "h": forged_hash, "s": seq},
        ),
    )


def test_inserted_row_is_named(engine, home):
    _append(engine, 5)
    _forge_after(engine, 3)
    with session_scope(engine) as s:
        forged = s.scalar(select(AuditEntry).where(AuditEntry.seq == 4))
        assert forged.actor == "mallory" and audit_log.entry_hash(forged) == forged.hash
        assert s.scalar(select(func.max(AuditEntry.seq))) == 6

    report = _verify(engine)
    assert not report.ok and report.broken_seq == 4 and report.checked == 4
    assert report.problem == "entry seq 4 was inserted: entry seq 5 still links to seq 3."
    result = _cli_verify(home)
    assert result.returncode == 1
    assert "entry seq 4 was inserted: entry seq 5 still links to seq 3." in result.stdout


def test_row_inserted_with_a_made_up_seq_is_named(engine, home):
    _append(engine, 3)
    _tamper(
        engine,
        (
            "INSERT INTO audit_log (seq, at, event, actor, target, client, outcome, details, "
            "prev_hash, hash) SELECT 0, at, event, 'mallory', target, client, outcome, details, "
            "prev_hash, hash FROM audit_log WHERE seq = 1",
            {},
        ),
    )
    report = _verify(engine)
    assert not report.ok and report.broken_seq == 0 and report.checked == 0
    assert report.problem.startswith("entry seq 0 (id ")
    assert "is out of place" in report.problem
    result = _cli_verify(home)
    assert result.returncode == 1 and "entry seq 0 (id" in result.stdout


def test_anchor_exposes_a_removed_tail_that_the_table_alone_cannot(engine, home):
    _append(engine, 5)
    head = _verify(engine)
    _tamper(engine, ("DELETE FROM audit_log WHERE seq = 5", {}))

    alone = _verify(engine)
    assert alone.ok and alone.head_seq == 4  # the documented limit of a keyless chain

    report = _verify(engine, anchor=(head.head_seq, head.head_hash))
    assert not report.ok and report.broken_seq == 5
    assert report.problem == (
        "entry seq 5 is missing: the chain ends at seq 4, but seq 5 was noted earlier as its head."
    )
    result = _cli_verify(home, "--anchor", f"{head.head_seq}:{head.head_hash}")
    assert result.returncode == 1 and "entry seq 5 is missing" in result.stdout
    result = _cli_verify(home, "--anchor", "5:nothex")
    assert result.returncode == 1 and "--anchor '5:nothex' is not SEQ:HASH" in result.stderr

    # an anchor on an entry still present, but rewritten with fresh hashes, is caught too
    _tamper(engine, ("UPDATE audit_log SET hash = :h WHERE seq = 4", {"h": "f" * 64}))
    report = _verify(engine, anchor=(4, "e" * 64))
    assert not report.ok and report.broken_seq == 4


# --- concurrency ---------------------------------------------------------------------------


def test_concurrent_appenders_keep_one_unbroken_chain(engine):
    threads, rounds = 8, 12
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def appender(n: int) -> None:
        try:
            start.wait(timeout=30)
            for i in range(rounds):
                with session_scope(engine) as s:
                    # callers read before they write; the head must still not be read stale
                    s.scalar(select(func.count()).select_from(User))
                    audit_log.record(s, audit_log.LOGIN_OK, actor=f"t{n}", details={"i": i})
                    if i % 3 == 0:
                        audit_log.record(
                            s, audit_log.TOKEN_CREATED, actor=f"t{n}", details={"i": i}
                        )
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    workers = [threading.Thread(target=appender, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors, errors
    assert not any(w.is_alive() for w in workers)

    expected = threads * (rounds + len(range(0, rounds, 3)))
    with session_scope(engine) as s:
        seqs = list(s.scalars(select(AuditEntry.seq).order_by(AuditEntry.seq)))
        actors = set(s.scalars(select(AuditEntry.actor)))
    assert seqs == list(range(1, expected + 1))
    assert actors == {f"t{n}" for n in range(threads)}
    report = _verify(engine)
    assert report.ok and report.checked == expected, report.problem


# --- listing -------------------------------------------------------------------------------


def _populate_for_listing(engine) -> None:
    with session_scope(engine) as s:
        audit_log.record(s, audit_log.USER_CREATED, actor="admin", target="carol")  # seq 1
        audit_log.record(s, audit_log.LOGIN_OK, actor="alice", client="10.0.0.1")  # seq 2
        audit_log.record(s, audit_log.LOGIN_FAILED, actor="bob", outcome="denied")  # seq 3
        audit_log.record(s, "login_audit.ran", actor="system")  # seq 4: not a login.* event
        audit_log.record(s, audit_log.TOKEN_CREATED, actor="admin", target="alice")  # seq 5
    # seq 1 happened ten days ago
    with session_scope(engine) as s:
        s.execute(
            update(AuditEntry)
            .where(AuditEntry.seq == 1)
            .values(at=datetime.now(UTC) - timedelta(days=10))
        )


def _seqs(found) -> list[int]:
    return [e.seq for e in found]


def test_entries_filter_newest_first(engine):
    _populate_for_listing(engine)
    with session_scope(engine) as s:
        assert _seqs(audit_log.entries(s)) == [5, 4, 3, 2, 1]
        assert _seqs(audit_log.entries(s, limit=2)) == [5, 4]
        assert _seqs(audit_log.entries(s, user="alice")) == [5, 2]  # as actor and as target
        assert _seqs(audit_log.entries(s, user="carol")) == [1]
        assert _seqs(audit_log.entries(s, event="login")) == [3, 2]
        assert _seqs(audit_log.entries(s, event="login.failed")) == [3]
        assert _seqs(audit_log.entries(s, event="login_audit")) == [4]
        assert _seqs(audit_log.entries(s, event="log")) == []
        assert _seqs(audit_log.entries(s, since=datetime.now(UTC) - timedelta(days=7))) == [
            5, 4, 3, 2,
        ]  # fmt: skip
        second = s.scalar(select(AuditEntry).where(AuditEntry.seq == 2))
        third = s.scalar(select(AuditEntry).where(AuditEntry.seq == 3))
        assert third.at > second.at
        after_second = second.at + timedelta(microseconds=1)
        assert _seqs(audit_log.entries(s, since=after_second)) == [5, 4, 3]
        assert _seqs(audit_log.entries(s, since=after_second, user="admin", event="token")) == [5]
        for bad in ({"limit": 0}, {"event": "Login%"}, {"since": datetime(2026, 1, 1)}):
            with pytest.raises(SctkError):
                audit_log.entries(s, **bad)


def test_parse_since_reads_dates_and_durations():
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert audit_log.parse_since("24h", now) == now - timedelta(hours=24)
    assert audit_log.parse_since("7d", now) == now - timedelta(days=7)
    assert audit_log.parse_since("30m", now) == now - timedelta(minutes=30)
    assert audit_log.parse_since("2w", now) == now - timedelta(weeks=2)
    assert audit_log.parse_since("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    assert audit_log.parse_since("2026-01-31T08:00+02:00") == datetime(2026, 1, 31, 6, tzinfo=UTC)
    assert audit_log.parse_since("2026-01-31T08:00Z") == datetime(2026, 1, 31, 8, tzinfo=UTC)
    for bad in ("yesterday", "7 days", "-3h", "", "2026-13-01"):
        with pytest.raises(SctkError, match="neither an ISO date nor a duration"):
            audit_log.parse_since(bad, now)


def test_cli_list_json_applies_the_filters(engine, home):
    _populate_for_listing(engine)
    result = run_sctk("audit-log", "list", "--since", "7d", "--event", "login", "--json", home=home)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["seq"], r["event"], r["actor"], r["outcome"]) for r in rows] == [
        (3, "login.failed", "bob", "denied"),
        (2, "login.ok", "alice", "ok"),
    ]
    assert rows[1]["client"] == "10.0.0.1"
    assert datetime.fromisoformat(rows[0]["at"]).utcoffset() == timedelta(0)

    result = run_sctk("audit-log", "list", "--user", "carol", "--json", home=home)
    assert [r["seq"] for r in json.loads(result.stdout)] == [1]  # 10 days old, no --since

    result = run_sctk("audit-log", "list", "--limit", "2", home=home)
    assert result.returncode == 0, result.stderr
    assert "token.created" in result.stdout and "user.created" not in result.stdout


def test_cli_refuses_a_bad_since_with_one_sentence(home):
    result = run_sctk("audit-log", "list", "--since", "yesterday", home=home)
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "'yesterday'" in lines[0] and "24h" in lines[0] and "Traceback" not in result.stderr
