"""The keyring, encrypted secrets and key rotation, including rotations that die midway."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker

from sctk import config, crashpoints
from sctk.config import Settings
from sctk.errors import SctkError
from sctk.ops.init_home import init_home
from sctk.runtime import Runtime
from sctk.security import audit_log, rotation
from sctk.security import secrets as sec
from sctk.security.keyring import Keyring, ring_lock, ring_path
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import AuditEntry, Secret
from tests.helpers import run_sctk, wait_until

N_SECRETS = 12


# -- helpers -------------------------------------------------------------------------------


def _keys_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "sctk", "keys", *args]


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update({"COLUMNS": "200", "SCTK_HOME": str(home), **(extra or {})})
    return env


def run_keys(*args: str, home: Path, env: dict[str, str] | None = None):
    return run_sctk("keys", *args, home=home, env=env)


def _values() -> dict[str, str]:
    return {f"secret-{i}": f"value {i} \N{SNOWMAN} {'x' * i}" for i in range(N_SECRETS)}


def _store(settings: Settings, values: dict[str, str]) -> None:
    ring = Keyring.load(settings.home)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            for name, value in values.items():
                sec.put_secret(s, ring, name, value)
    finally:
        engine.dispose()


def _decrypt_all(settings: Settings) -> dict[str, str]:
    """Every stored value, decrypted with the ring exactly as it is on disk now."""
    ring = Keyring.load(settings.home)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return {info.name: sec.get_secret(s, ring, info.name) for info in sec.list_secrets(s)}
    finally:
        engine.dispose()


def _key_ids(settings: Settings) -> list[int]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return sorted(s.scalars(select(Secret.key_id)))
    finally:
        engine.dispose()


def _audit_events(settings: Settings, prefix: str = "key.") -> list[AuditEntry]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            assert audit_log.verify(s).ok
            return list(
                s.scalars(
                    select(AuditEntry)
                    .where(AuditEntry.event.startswith(prefix))
                    .order_by(AuditEntry.seq)
                )
            )
    finally:
        engine.dispose()


@pytest.fixture
def keys_home(tmp_path) -> Path:
    """A bare directory with keys/ only: enough for tests that do not touch the database."""
    home = tmp_path / "bare"
    (home / "keys").mkdir(parents=True, mode=0o700)
    return home


# -- the keyring on its own ----------------------------------------------------------------


def test_encrypt_decrypt_round_trip(keys_home):
    ring = Keyring.load(keys_home)
    key_id, token = ring.encrypt(b"smtp password \x00\xff")
    assert key_id == ring.current_id == 1
    assert b"smtp password" not in token.encode()
    assert ring.decrypt(key_id, token) == b"smtp password \x00\xff"
    # a second load reads the same key instead of making a new one
    assert Keyring.load(keys_home).decrypt(key_id, token) == b"smtp password \x00\xff"
    assert ring.encrypt(b"same")[1] != ring.encrypt(b"same")[1]  # random IV per token

    tampered = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    with pytest.raises(SctkError, match="cannot be decrypted with key 1"):
        ring.decrypt(key_id, tampered)
    with pytest.raises(SctkError, match=r"key 7, which is not in .*keyring\.json"):
        ring.decrypt(7, token)
    assert [(k.id, k.state) for k in ring.keys] == [(1, "active")]
    assert "material" not in repr(ring.keys)


def test_file_and_directory_modes(tmp_path):
    home = tmp_path / "h"
    init_home(home)
    os.chmod(home / "keys", 0o755)  # loosened by hand: loading the ring tightens it again
    Keyring.load(home)
    assert stat.S_IMODE((home / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE(ring_path(home).stat().st_mode) == 0o600
    settings = config.load(home).settings
    rotation.rotate(Runtime(settings))  # rewritten twice by the rotation: still 0600
    assert stat.S_IMODE(ring_path(home).stat().st_mode) == 0o600
    assert not list((home / "keys").glob("*.tmp"))


def test_missing_keys_directory_is_an_error(tmp_path):
    with pytest.raises(SctkError, match=r"keys does not exist; run 'sctk init"):
        Keyring.load(tmp_path)
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b'{"format": 1, "keys": []}',
        b'{"format": 1, "keys": [{"id": 1, "created_at": "2024-01-01T00:00:00+00:00",'
        b' "state": "active", "material": "c2hvcnQ="}], "rotation": null}',
        b"\xff\xfe garbage",
    ],
    ids=["empty", "truncated", "no-keys", "short-material", "binary"],
)
def test_corrupt_keyring_is_reported_and_left_alone(keys_home, content):
    path = ring_path(keys_home)
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(SctkError) as err:
        Keyring.load(keys_home)
    assert str(path) in err.value.message
    assert "restore it from a backup" in err.value.message
    assert path.read_bytes() == content
    assert sorted(p.name for p in (keys_home / "keys").iterdir()) == ["keyring.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_unreadable_keyring_is_reported(keys_home):
    Keyring.load(keys_home)
    os.chmod(ring_path(keys_home), 0)
    with pytest.raises(SctkError, match=r"Cannot read the keyring .*keyring\.json"):
        Keyring.load(keys_home)


def test_processes_creating_the_ring_at_once_agree_on_one_key(keys_home):
    code = (
        "import sys; from pathlib import Path; from sctk.security.keyring import Keyring; "
        "print(Keyring.load(Path(sys.argv[1])).jwt_key(1)[1].hex())"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(keys_home)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outputs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert outputs == {Keyring.load(keys_home).jwt_key(1)[1].hex()}


def test_jwt_key_is_stable_per_kid_and_differs_between_kids(keys_home):
    ring = Keyring.load(keys_home)
    kid, key1 = ring.jwt_key()
    assert kid == 1 and len(key1) == 32
    assert Keyring.load(keys_home).jwt_key(1) == (1, key1)  # derived, so stable across loads
    raw = json.loads(ring_path(keys_home).read_text())["keys"][0]["material"]
    assert key1.hex() not in raw and key1 != base64.b64decode(raw)

    ring.begin_rotation()
    kid2, key2 = ring.jwt_key()
    assert kid2 == 2 and key2 != key1
    assert ring.jwt_key(1) == (1, key1)
    assert Keyring.load(keys_home).jwt_key(2) == (2, key2)
    with pytest.raises(SctkError, match="No key 9"):
        ring.jwt_key(9)


def test_a_retired_keys_jwt_subkey_is_kept_only_until_its_sessions_expire(keys_home):
    ring = Keyring.load(keys_home)
    _, old = ring.jwt_key()
    material = json.loads(ring_path(keys_home).read_text())["keys"][0]["material"]
    ring.begin_rotation()
    ring.finish_rotation(keep_sessions_until=datetime.now(UTC) + timedelta(minutes=15))
    # JWTs key 1 signed still verify, in this process and in one that loads the ring now;
    # the file keeps the JWT subkey only, never the material that decrypts values
    assert ring.jwt_key(1) == (1, old)
    assert Keyring.load(keys_home).jwt_key(1) == (1, old)
    text = ring_path(keys_home).read_text()
    assert material not in text and [k.id for k in ring.keys] == [2]
    with pytest.raises(SctkError, match="not in"):
        ring.decrypt(1, "gAAAA", label="A value")
    # a subkey whose sessions have expired is no use: refused, and not written down
    ring.begin_rotation()
    ring.finish_rotation(keep_sessions_until=datetime.now(UTC) - timedelta(seconds=1))
    for fresh in (ring, Keyring.load(keys_home)):
        with pytest.raises(SctkError, match="No key 2"):
            fresh.jwt_key(2)
        assert fresh.jwt_key(1) == (1, old)  # still within its own time
    retired = json.loads(ring_path(keys_home).read_text())["retired_jwt"]
    assert [r["id"] for r in retired] == [1]
    # a rotation that ends the sessions keeps no subkey at all
    ring.begin_rotation()
    ring.finish_rotation()
    for kid in (1, 3):
        with pytest.raises(SctkError, match=f"No key {kid}"):
            Keyring.load(keys_home).jwt_key(kid)
    assert "retired_jwt" not in ring_path(keys_home).read_text()


def test_long_lived_ring_follows_a_rotation_made_by_another_process(keys_home):
    served = Keyring.load(keys_home)  # as an API process holds it
    other = Keyring.load(keys_home)
    other.begin_rotation()
    key_id, token = other.encrypt(b"new")
    assert key_id == 2
    assert served.decrypt(2, token) == b"new"  # unknown id: re-read from disk
    assert served.jwt_key()[0] == 2  # signing follows the newest key
    other.finish_rotation()
    assert served.encrypt(b"x")[0] == 2


# -- secrets in the database ---------------------------------------------------------------


def test_secrets_put_get_list_delete(settings):
    ring = Keyring.load(settings.home)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            assert sec.put_secret(s, ring, "smtp.password", "hunter2") == 1
            sec.put_secret(s, ring, "webhook.url", "https://hooks.example/abc")
        with session_scope(engine) as s:
            sec.put_secret(s, ring, "smtp.password", "correct horse")  # replaces
        with session_scope(engine) as s:
            assert sec.get_secret(s, ring, "smtp.password") == "correct horse"
            listed = sec.list_secrets(s)
            assert [(i.name, i.key_id) for i in listed] == [
                ("smtp.password", 1),
                ("webhook.url", 1),
            ]
            assert "correct horse" not in repr(listed)
            stored = s.scalars(select(Secret.ciphertext)).all()
            assert not any("hunter2" in c or "correct horse" in c or "hooks" in c for c in stored)
            with pytest.raises(SctkError, match="No secret named 'nope'"):
                sec.get_secret(s, ring, "nope")
            assert sec.delete_secret(s, "webhook.url") is True
            assert sec.delete_secret(s, "webhook.url") is False
        with session_scope(engine) as s:
            assert [i.name for i in sec.list_secrets(s)] == ["smtp.password"]
            with pytest.raises(SctkError, match="not valid"):
                sec.put_secret(s, ring, "  ", "x")
    finally:
        engine.dispose()


def test_secret_encrypted_by_another_keyring_is_a_clear_error(settings):
    _store(settings, {"smtp.password": "hunter2"})
    ring_path(settings.home).unlink()  # the keyring is lost; a new one gets a new key 1
    ring = Keyring.load(settings.home)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s, pytest.raises(SctkError, match="'smtp.password'"):
            sec.get_secret(s, ring, "smtp.password")
    finally:
        engine.dispose()
    before = ring_path(settings.home).read_bytes()
    with pytest.raises(SctkError, match="cannot be decrypted"):
        rotation.rotate(Runtime(settings))  # refused before anything changes
    assert ring_path(settings.home).read_bytes() == before
    assert _key_ids(settings) == [1]


# -- rotation ------------------------------------------------------------------------------


def test_rotate_reencrypts_everything_and_retires_the_old_key(settings):
    values = _values()
    _store(settings, values)
    served = Keyring.load(settings.home)  # loaded before the rotation, like an API process
    engine = make_engine(settings)
    with session_scope(engine) as s:
        tokens_before = dict(s.execute(select(Secret.name, Secret.ciphertext)).all())
    assert [(k.id, k.state, k.values) for k in rotation.status(Runtime(settings))] == [
        (1, "active", N_SECRETS)
    ]

    report = rotation.rotate(Runtime(settings), batch_size=5)

    assert (report.new_key_id, report.reencrypted, report.retired_key_ids, report.resumed) == (
        2,
        N_SECRETS,
        [1],
        False,
    )
    assert _decrypt_all(settings) == values
    assert _key_ids(settings) == [2] * N_SECRETS
    with session_scope(engine) as s:
        tokens_after = dict(s.execute(select(Secret.name, Secret.ciphertext)).all())
    assert all(tokens_after[n] != tokens_before[n] for n in values)
    on_disk = json.loads(ring_path(settings.home).read_text())
    assert [k["id"] for k in on_disk["keys"]] == [2] and on_disk["rotation"] is None
    ring = Keyring.load(settings.home)
    with pytest.raises(SctkError, match="key 1, which is not in"):
        ring.decrypt(1, tokens_before["secret-0"])
    status = rotation.status(Runtime(settings))
    assert [(k.id, k.state, k.values) for k in status] == [(2, "active", N_SECRETS)]
    assert status[0].age is not None and status[0].age.total_seconds() < 60
    assert rotation.newest_key_age(settings).total_seconds() < 60

    # the ring an API process loaded before the rotation still reads and writes correctly
    with session_scope(engine) as s:
        assert sec.get_secret(s, served, "secret-3") == values["secret-3"]
        assert sec.put_secret(s, served, "late", "written after") == 2
    engine.dispose()

    events = _audit_events(settings)
    assert [e.event for e in events] == ["key.rotation_started", "key.rotated"]
    assert events[1].details["new_key_id"] == 2
    assert events[1].details["retired_key_ids"] == [1]
    assert events[1].details["reencrypted"] == N_SECRETS


def test_status_reports_values_under_a_key_the_ring_lacks(settings):
    _store(settings, {"a": "1", "b": "2"})
    engine = make_engine(settings)
    with session_scope(engine) as s:
        s.add(Secret(name="orphan", key_id=9, ciphertext="gAAAA"))
    engine.dispose()
    assert [(k.id, k.state, k.values) for k in rotation.status(Runtime(settings))] == [
        (1, "active", 2),
        (9, "missing", 1),
    ]
    with pytest.raises(SctkError, match="key\\(s\\) 9, which .* does not hold"):
        rotation.rotate(Runtime(settings))
    assert [k.id for k in Keyring.load(settings.home).keys] == [1]


def test_rotation_killed_midway_resumes_without_a_new_key(settings):
    values = _values()
    _store(settings, values)

    died = run_keys(
        "rotate",
        "--batch-size",
        "2",
        home=settings.home,
        env={crashpoints.ENV: "keys.moved.4"},  # killed once the second batch is committed
    )
    assert died.returncode == -signal.SIGKILL, died.stderr

    # as left on disk by the dead process: both keys, the rotation marked, half the rows moved
    on_disk = json.loads(ring_path(settings.home).read_text())
    assert [(k["id"], k["state"]) for k in on_disk["keys"]] == [(1, "retiring"), (2, "active")]
    assert on_disk["rotation"]["new_key_id"] == 2
    assert _key_ids(settings) == [1] * (N_SECRETS - 4) + [2] * 4
    assert _decrypt_all(settings) == values
    assert [(k.id, k.state, k.values) for k in rotation.status(Runtime(settings))] == [
        (1, "retiring", N_SECRETS - 4),
        (2, "active", 4),
    ]
    shown = run_keys("status", "--json", home=settings.home)
    assert shown.returncode == 0, shown.stderr
    assert [(k["id"], k["values"]) for k in json.loads(shown.stdout)] == [
        (1, N_SECRETS - 4),
        (2, 4),
    ]

    resumed = run_keys("rotate", home=settings.home)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed an interrupted rotation to key 2" in resumed.stdout
    assert f"values re-encrypted: {N_SECRETS - 4}" in resumed.stdout
    assert "keys retired: 1" in resumed.stdout

    assert _decrypt_all(settings) == values
    assert _key_ids(settings) == [2] * N_SECRETS
    assert [k.id for k in Keyring.load(settings.home).keys] == [2]  # no key 3
    events = _audit_events(settings)
    assert [e.event for e in events] == ["key.rotation_started", "key.rotated"]
    assert events[1].details["resumed"] is True
    assert events[1].actor.startswith("cli")


def test_concurrent_rotation_is_refused_and_a_sigkilled_one_resumes(settings, tmp_path):
    values = _values()
    _store(settings, values)
    paused = tmp_path / "paused"
    first = subprocess.Popen(
        _keys_argv("rotate", "--batch-size", "3"),
        env=_env(
            settings.home,
            {
                crashpoints.PAUSE_ENV: "keys.moved.3",  # held after the first batch
                crashpoints.PAUSED_FILE_ENV: str(paused),
            },
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(paused.exists, timeout=120, what="the first rotation to pause midway")
        ring_before = ring_path(settings.home).read_bytes()

        second = run_keys("rotate", home=settings.home)
        assert second.returncode == 1
        assert "a key rotation is already running" in second.stderr.lower()
        assert ring_path(settings.home).read_bytes() == ring_before
        with pytest.raises(SctkError, match="already running"):
            rotation.rotate(Runtime(settings))  # in-process too: flock is per open file
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL

    assert _key_ids(settings) == [1] * (N_SECRETS - 3) + [2] * 3
    assert _decrypt_all(settings) == values
    with ring_lock(settings.home, blocking=False):
        pass  # the kernel released the dead process's lock

    report = rotation.rotate(Runtime(settings), actor="tester")
    assert (report.new_key_id, report.reencrypted, report.resumed) == (2, N_SECRETS - 3, True)
    assert [k.id for k in Keyring.load(settings.home).keys] == [2]
    assert _decrypt_all(settings) == values
    assert [e.event for e in _audit_events(settings)] == ["key.rotation_started", "key.rotated"]


def test_rotation_with_no_secrets_and_twice_in_a_row(settings):
    first = rotation.rotate(Runtime(settings))
    second = rotation.rotate(Runtime(settings))
    assert (first.new_key_id, first.reencrypted, first.retired_key_ids) == (2, 0, [1])
    assert (second.new_key_id, second.retired_key_ids, second.resumed) == (3, [2], False)
    assert [k.id for k in Keyring.load(settings.home).keys] == [3]
    assert [e.event for e in _audit_events(settings)] == [
        "key.rotation_started",
        "key.rotated",
        "key.rotation_started",
        "key.rotated",
    ]


def test_writer_with_a_stale_ring_cannot_strand_a_value_under_a_retired_key(settings):
    """A value written under the old key by a transaction open across the rotation is moved."""
    values = _values()
    _store(settings, values)
    stale = Keyring.load(settings.home)  # holds key 1 only
    engine = make_engine(settings)
    writer = sessionmaker(engine)()
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: run())

    def run() -> None:
        try:
            result["report"] = rotation.rotate(Runtime(settings), batch_size=4)
        except BaseException as exc:  # reported by the main thread
            result["error"] = exc

    try:
        assert sec.put_secret(writer, stale, "late", "written during rotation") == 1
        thread.start()
        wait_until(
            lambda: Keyring.load(settings.home).rotation is not None,
            what="the rotation to add its key",
        )
        # On SQLite the rotation now waits for the single write lock this writer holds. On
        # PostgreSQL wait until it is blocked by the writer's open transaction, so that a
        # missing lock would let it retire key 1 before the writer commits.
        if not settings.is_sqlite:
            with engine.connect() as conn:
                wait_until(
                    lambda: conn.execute(
                        text(
                            "SELECT count(*) FROM pg_locks l JOIN pg_class c "
                            "ON c.oid = l.relation WHERE c.relname = 'secrets' AND NOT l.granted"
                        )
                    ).scalar(),
                    what="the rotation to wait on the secrets table lock",
                )
        writer.commit()
    finally:
        writer.close()
        if thread.is_alive():
            thread.join(timeout=120)
        engine.dispose()
    assert "error" not in result, result.get("error")
    assert _decrypt_all(settings) == {**values, "late": "written during rotation"}
    assert _key_ids(settings) == [2] * (N_SECRETS + 1)
    assert [k.id for k in Keyring.load(settings.home).keys] == [2]
