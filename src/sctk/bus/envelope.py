"""Signed envelopes: what travels on the bus, and how a receiver knows it came from sctk.

Every field but the signature is serialised canonically (sorted keys, compact separators,
UTF-8) and signed with HMAC-SHA256 under a key the keyring derives for the bus alone, so a
bus key can neither sign a JWT nor decrypt a stored secret. The key id (kid) travels in the
envelope: after a rotation, messages signed with the retiring key still verify until the
rotation finishes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sctk.errors import SctkError
from sctk.security.keyring import Keyring

BROADCAST = "*"
FIELDS = ("id", "type", "source", "target", "created_at", "payload", "kid", "signature")
MAX_TYPE = 100  # the width of bus_messages.type
MAX_NAME = 200  # source and target (a handler's name: bus_dead_letters.handler)

TYPE_RE = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+$")
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_SIG_RE = re.compile(r"^[0-9a-f]{64}$")


class InvalidEnvelope(SctkError):
    """A message that is unsigned, signed by an unknown key, altered, or malformed."""

    def __init__(self, reason: str):
        super().__init__(f"Bus message rejected: {reason}.")
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """A verified (or freshly signed) message. Every subscriber gets the same object: treat
    the payload as read-only."""

    id: str
    type: str
    source: str
    target: str
    created_at: str
    payload: dict[str, Any]
    kid: int
    signature: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical(self) -> bytes:
        return canonical(self.to_dict())


def canonical(fields: dict[str, Any]) -> bytes:
    """The signed bytes: every field but the signature as sorted, compact JSON."""
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    return json.dumps(
        unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def check_type(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_TYPE or not TYPE_RE.match(value):
        raise InvalidEnvelope(
            f"type {str(value)[:MAX_TYPE]!r} is not a dotted lower-case name such as 'job.event'"
        )
    return value


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise InvalidEnvelope(f"{what} must be a non-empty string of at most {MAX_NAME} characters")
    return value


def sign(
    ring: Keyring,
    type: str,
    payload: dict[str, Any],
    *,
    source: str,
    target: str = BROADCAST,
    id: str | None = None,
    created_at: str | None = None,
) -> Envelope:
    """A new envelope signed with the newest bus key (a fresh id and time unless given)."""
    if not isinstance(payload, dict):
        raise InvalidEnvelope("the payload must be a JSON object")
    fields: dict[str, Any] = {
        "id": id or uuid.uuid4().hex,
        "type": check_type(type),
        "source": _check_name(source, "source"),
        "target": _check_name(target, "target"),
        "created_at": created_at or datetime.now(UTC).isoformat(),
        "payload": payload,
    }
    kid, key = ring.bus_key()
    fields["kid"] = kid
    try:
        data = canonical(fields)
    except (TypeError, ValueError) as exc:
        raise InvalidEnvelope(f"the payload is not JSON ({exc})") from None
    # what a receiver will see is the JSON round trip of the payload, not the caller's object
    fields["payload"] = json.loads(data)["payload"]
    return Envelope(**fields, signature=_mac(key, data))


def check_fields(data: Any) -> dict[str, Any]:
    """DATA if it has every field, well formed (the signature is not checked here)."""
    if not isinstance(data, dict):
        raise InvalidEnvelope("it is not a JSON object")
    if "signature" not in data or data["signature"] in (None, ""):
        raise InvalidEnvelope("it is unsigned")
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise InvalidEnvelope(f"it lacks the field(s) {', '.join(missing)}")
    extra = sorted(set(data) - set(FIELDS))
    if extra:
        # an unknown field would travel unsigned: refuse it rather than ignore it
        raise InvalidEnvelope(f"it has unknown field(s) {', '.join(map(str, extra))[:200]}")
    if not isinstance(data["id"], str) or not _ID_RE.match(data["id"]):
        raise InvalidEnvelope("its id is not 32 lower-case hex digits")
    check_type(data["type"])
    _check_name(data["source"], "source")
    _check_name(data["target"], "target")
    created = data["created_at"]
    try:
        if not isinstance(created, str) or datetime.fromisoformat(created).tzinfo is None:
            raise ValueError
    except ValueError:
        raise InvalidEnvelope("its created_at is not an ISO time with a time zone") from None
    if not isinstance(data["payload"], dict):
        raise InvalidEnvelope("its payload is not a JSON object")
    kid = data["kid"]
    if not isinstance(kid, int) or isinstance(kid, bool) or kid < 1:
        raise InvalidEnvelope("its kid is not a positive integer")
    if not isinstance(data["signature"], str) or not _SIG_RE.match(data["signature"]):
        raise InvalidEnvelope("its signature is not 64 lower-case hex digits")
    return data


def verify(ring: Keyring, data: Any) -> Envelope:
    """The envelope DATA (a dict) describes, once its signature checks; InvalidEnvelope if not."""
    fields = check_fields(data)
    try:
        _, key = ring.bus_key(fields["kid"])
    except SctkError:
        raise InvalidEnvelope(f"it is signed with key {fields['kid']}, which is unknown") from None
    try:
        expected = _mac(key, canonical(fields))
    except (TypeError, ValueError):
        raise InvalidEnvelope("its payload is not JSON") from None
    if not hmac.compare_digest(expected, fields["signature"]):
        raise InvalidEnvelope("its signature does not match its content")
    return Envelope(**{f: fields[f] for f in FIELDS})


# what a subscriber is: called with each envelope delivered to it
Handler = Callable[[Envelope], Any]
