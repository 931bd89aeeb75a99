"""Envelopes: canonical signing and every way verification refuses a message."""

from __future__ import annotations

import json

import pytest

from sctk.bus.envelope import InvalidEnvelope, canonical, sign, verify
from sctk.security.keyring import Keyring


@pytest.fixture
def ring(tmp_path) -> Keyring:
    (tmp_path / "keys").mkdir(mode=0o700)
    return Keyring.load(tmp_path)


def _signed(ring: Keyring) -> dict:
    env = sign(ring, "job.event", {"job_id": 7, "seq": 1, "note": "grüße", "x": 0.1}, source="t")
    return env.to_dict()


def test_round_trip_through_json(ring):
    data = _signed(ring)
    assert data["target"] == "*" and data["kid"] == ring.current_id and len(data["id"]) == 32
    received = json.loads(json.dumps(data))
    env = verify(ring, received)
    assert env.to_dict() == data
    # canonical: key order does not matter, every field but the signature is covered
    shuffled = dict(reversed(list(received.items())))
    assert canonical(shuffled) == canonical(received)
    assert b'"signature"' not in canonical(received)


def test_the_bus_key_is_neither_the_jwt_key_nor_another_keys(ring):
    kid, key = ring.bus_key()
    assert key != ring.jwt_key(kid)[1] and len(key) == 32
    ring.begin_rotation()
    assert ring.bus_key()[1] != key and ring.bus_key(kid) == (kid, key)


@pytest.mark.parametrize("field", ["payload", "signature", "type", "created_at", "id"])
def test_one_changed_byte_is_rejected(ring, field):
    text = json.dumps(_signed(ring))
    data = json.loads(text)
    original = json.dumps(data[field])
    # change exactly one character inside the field's JSON text, keeping it valid
    i = next(i for i, c in enumerate(original) if c in "0123456789abcdef")
    swapped = original[:i] + ("1" if original[i] != "1" else "2") + original[i + 1 :]
    tampered = json.loads(text.replace(original, swapped, 1))
    assert tampered != data
    with pytest.raises(InvalidEnvelope, match="signature does not match"):
        verify(ring, tampered)


@pytest.mark.parametrize("signature", [None, "", "absent"])
def test_an_unsigned_message_is_rejected(ring, signature):
    data = _signed(ring)
    if signature == "absent":
        del data["signature"]
    else:
        data["signature"] = signature
    with pytest.raises(InvalidEnvelope, match="unsigned") as info:
        verify(ring, data)
    assert info.value.message == "Bus message rejected: it is unsigned."


def test_an_unknown_key_is_rejected(ring):
    data = _signed(ring)
    data["kid"] = 99
    with pytest.raises(InvalidEnvelope, match="key 99, which is unknown"):
        verify(ring, data)


def test_a_retired_key_verifies_during_a_rotation_and_not_after(ring):
    data = _signed(ring)
    ring.begin_rotation()
    assert verify(ring, data).kid == 1
    assert sign(ring, "a.b", {}, source="t").kid == 2
    ring.finish_rotation()
    with pytest.raises(InvalidEnvelope, match="key 1, which is unknown"):
        verify(ring, data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("source"), "lacks the field(s) source"),
        (lambda d: d.update(extra=1), "unknown field(s) extra"),
        (lambda d: d.update(type="NoDots"), "dotted lower-case name"),
        (lambda d: d.update(id="xyz"), "32 lower-case hex"),
        (lambda d: d.update(created_at="2026-01-01T00:00:00"), "time zone"),
        (lambda d: d.update(payload=[1]), "payload is not a JSON object"),
        (lambda d: d.update(kid="1"), "kid is not a positive integer"),
        (lambda d: d.update(kid=True), "kid is not a positive integer"),
        (lambda d: d.update(signature="zz"), "64 lower-case hex"),
        (lambda d: d.update(target=""), "target must be a non-empty string"),
    ],
)
def test_malformed_fields_are_named(ring, change, message):
    data = _signed(ring)
    change(data)
    with pytest.raises(InvalidEnvelope, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify(ring, data)


def test_not_an_object_and_bad_payloads(ring):
    with pytest.raises(InvalidEnvelope, match="not a JSON object"):
        verify(ring, "a string")
    with pytest.raises(InvalidEnvelope, match="not JSON"):
        sign(ring, "a.b", {"x": object()}, source="t")
    with pytest.raises(InvalidEnvelope, match="not JSON"):
        sign(ring, "a.b", {"x": float("nan")}, source="t")
    with pytest.raises(InvalidEnvelope, match="dotted"):
        sign(ring, "single", {}, source="t")
