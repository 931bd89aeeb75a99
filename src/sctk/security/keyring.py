"""The encryption keyring: versioned keys in <home>/keys/keyring.json.

Each key is 32 random bytes of material with an integer id. The material is never used
directly: HKDF derives one subkey per purpose (encryption, JWT signing), so a signing key
can never decrypt a stored value and vice versa.

Encryption uses Fernet (one per key) rather than raw AES-GCM: Fernet tokens are
self-contained URL-safe text (they fit a Text column as they are), the IV is generated
inside the library so no caller can reuse a nonce, and every token is authenticated
(AES-128-CBC + HMAC-SHA256). The key id travels beside the token, in the row that stores it.

The file is the only copy of the keys: it is written atomically, mode 0600, and an
unreadable or corrupt file is an error, never a reason to create a new one (that would make
every stored value undecryptable).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sctk.errors import SctkError
from sctk.fsutil import atomic_write

KEYS_DIR = "keys"
RING_FILE = "keyring.json"
LOCK_FILE = "keyring.lock"
FORMAT = 1
MATERIAL_BYTES = 32

ACTIVE = "active"  # the newest key: encrypts every new value and signs new JWTs
RETIRING = "retiring"  # an older key during an unfinished rotation: decrypts only
STATES = (ACTIVE, RETIRING)

_FERNET_INFO = b"sctk-fernet"
_JWT_INFO = b"sctk-jwt"
_BUS_INFO = b"sctk-bus"


@dataclass(frozen=True)
class KeyInfo:
    """A key as it may be shown: never its material."""

    id: int
    created_at: datetime
    state: str


@dataclass(frozen=True)
class RotationMark:
    """An unfinished rotation recorded in the ring: the key every value is moving to."""

    new_key_id: int
    started_at: datetime


def ring_path(home: Path) -> Path:
    return home / KEYS_DIR / RING_FILE


def _now() -> datetime:
    return datetime.now(UTC)


def _derive(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


@contextmanager
def ring_lock(home: Path, *, blocking: bool, busy_message: str = "") -> Iterator[None]:
    """An exclusive flock on keys/keyring.lock, held by a rotation and by ring creation.

    The kernel drops the lock when the holder dies, so a killed rotation never leaves a
    stale lock behind.
    """
    path = home / KEYS_DIR / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise SctkError(busy_message or f"{path} is locked by another process.") from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class _Invalid(Exception):
    pass


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise _Invalid(f"{what} is not a timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(f"{what} is not an ISO timestamp") from None
    if parsed.tzinfo is None:
        raise _Invalid(f"{what} has no time zone")
    return parsed.astimezone(UTC)


def _parse(text: str) -> tuple[dict[int, tuple[KeyInfo, bytes]], RotationMark | None]:
    """Validate the file's content strictly; any doubt is an error, not a repair."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Invalid(f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _Invalid(f"not a keyring of format {FORMAT}")
    raw_keys = data.get("keys")
    if not isinstance(raw_keys, list) or not raw_keys:
        raise _Invalid("it holds no keys")
    keys: dict[int, tuple[KeyInfo, bytes]] = {}
    for i, raw in enumerate(raw_keys):
        if not isinstance(raw, dict):
            raise _Invalid(f"key entry {i} is not an object")
        key_id = raw.get("id")
        if not isinstance(key_id, int) or isinstance(key_id, bool) or key_id < 1:
            raise _Invalid(f"key entry {i} has no valid id")
        if key_id in keys:
            raise _Invalid(f"key {key_id} appears twice")
        try:
            material = base64.b64decode(str(raw.get("material", "")), validate=True)
        except (binascii.Error, ValueError):
            raise _Invalid(f"key {key_id} has material that is not base64") from None
        if len(material) != MATERIAL_BYTES:
            raise _Invalid(f"key {key_id} has {len(material)} bytes of material, not 32")
        state = raw.get("state")
        if state not in STATES:
            raise _Invalid(f"key {key_id} has an unknown state {state!r}")
        created = _parse_time(raw.get("created_at"), f"key {key_id}'s created_at")
        keys[key_id] = (KeyInfo(key_id, created, state), material)
    newest = max(keys)
    if keys[newest][0].state != ACTIVE or sum(k.state == ACTIVE for k, _ in keys.values()) != 1:
        raise _Invalid("exactly the newest key must be active")
    mark = None
    raw_mark = data.get("rotation")
    if raw_mark is not None:
        if not isinstance(raw_mark, dict) or raw_mark.get("new_key_id") != newest:
            raise _Invalid("the unfinished rotation does not name the newest key")
        mark = RotationMark(newest, _parse_time(raw_mark.get("started_at"), "rotation started_at"))
    elif len(keys) > 1:
        raise _Invalid("it holds several keys but no rotation is in progress")
    return keys, mark


def _parse_retired_jwt(data: Any) -> dict[int, tuple[bytes, datetime]]:
    """The JWT verification keys of retired keys, kept until the last JWT they signed
    expires (absent in rings written before they were kept: none then)."""
    raw = data.get("retired_jwt") if isinstance(data, dict) else None
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise _Invalid("retired_jwt is not a list")
    kept: dict[int, tuple[bytes, datetime]] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int):
            raise _Invalid(f"retired_jwt entry {i} has no valid id")
        try:
            key = base64.b64decode(str(entry.get("jwt_key", "")), validate=True)
        except (binascii.Error, ValueError):
            raise _Invalid(f"retired_jwt entry {i} has a key that is not base64") from None
        if len(key) != 32:
            raise _Invalid(f"retired_jwt entry {i} has a key of {len(key)} bytes, not 32")
        kept[entry["id"]] = (key, _parse_time(entry.get("until"), f"retired_jwt entry {i}"))
    return kept


class Keyring:
    """The versioned keys of one data directory. Load it with `Keyring.load(home)`."""

    def __init__(
        self,
        path: Path,
        keys: dict[int, tuple[KeyInfo, bytes]],
        rotation: RotationMark | None,
        stamp: tuple[int, int, int] | None = None,
        retired_jwt: dict[int, tuple[bytes, datetime]] | None = None,
    ):
        self.path = path
        self._keys = keys
        self._rotation = rotation
        self._stamp = stamp
        # kid -> (derived JWT key, until): a routine rotation keeps sessions until they
        # expire; only the signing subkey is kept, which decrypts nothing
        self._retired_jwt = dict(retired_jwt or {})
        # keyed by material, not id: a refresh may bring a different ring with the same ids
        self._fernets: dict[bytes, Fernet] = {}
        self._jwt_keys: dict[bytes, bytes] = {}
        self._bus_keys: dict[bytes, bytes] = {}

    # -- loading and saving -------------------------------------------------------------

    @classmethod
    def load(cls, home: Path) -> Keyring:
        """The ring of HOME; created with one key when keys/ exists but the file does not."""
        keys_dir = home / KEYS_DIR
        path = keys_dir / RING_FILE
        if not keys_dir.is_dir():
            raise SctkError(
                f"{keys_dir} does not exist; run 'sctk init {home}' to create the data directory."
            )
        if stat.S_IMODE(keys_dir.stat().st_mode) & 0o077:
            with suppress(OSError):  # not ours to change: still usable, doctor can say so
                os.chmod(keys_dir, 0o700)  # only the service account may list the keys
        if not path.exists():
            # A lock, and a second look under it, so that two processes starting at once
            # cannot each create a ring and have one overwrite the other's key.
            with ring_lock(home, blocking=True):
                if not path.exists():
                    ring = cls(path, {}, None)
                    ring._add_key()
                    ring._save()
                    return ring
        return cls._read(path)

    @classmethod
    def _read(cls, path: Path) -> Keyring:
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                raw = fh.read()
        except OSError as exc:
            raise SctkError(
                f"Cannot read the keyring {path}: {exc.strerror}; "
                "fix its ownership or permissions (it must be readable by the sctk user)."
            ) from None
        try:
            text = raw.decode("utf-8")
            keys, mark = _parse(text)
            retired_jwt = _parse_retired_jwt(json.loads(text))
        except (_Invalid, UnicodeDecodeError) as exc:
            raise SctkError(
                f"The keyring {path} is corrupt ({exc}); restore it from a backup, "
                "sctk will not replace it because the values it encrypts would be lost."
            ) from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            with suppress(OSError):
                os.chmod(path, 0o600)
        return cls(path, keys, mark, (st.st_ino, st.st_mtime_ns, st.st_size), retired_jwt)

    def refresh(self) -> None:
        """Re-read the file if another process (a rotation) has replaced it since."""
        try:
            st = self.path.stat()
        except OSError:
            return  # keep the keys in memory; a missing file is reported by the next load
        if (st.st_ino, st.st_mtime_ns, st.st_size) == self._stamp:
            return
        fresh = self._read(self.path)
        self._keys, self._rotation, self._stamp = fresh._keys, fresh._rotation, fresh._stamp
        self._retired_jwt = fresh._retired_jwt

    def _save(self) -> None:
        doc = {
            "format": FORMAT,
            "keys": [
                {
                    "id": info.id,
                    "created_at": info.created_at.isoformat(),
                    "state": info.state,
                    "material": base64.b64encode(material).decode("ascii"),
                }
                for info, material in (self._keys[k] for k in sorted(self._keys))
            ],
            "rotation": None
            if self._rotation is None
            else {
                "new_key_id": self._rotation.new_key_id,
                "started_at": self._rotation.started_at.isoformat(),
            },
        }
        now = _now()
        kept = sorted((k, v) for k, v in self._retired_jwt.items() if v[1] > now)
        if kept:
            doc["retired_jwt"] = [
                {
                    "id": kid,
                    "jwt_key": base64.b64encode(key).decode("ascii"),
                    "until": until.isoformat(),
                }
                for kid, (key, until) in kept
            ]
        atomic_write(self.path, json.dumps(doc, indent=2) + "\n", mode=0o600)
        st = self.path.stat()
        self._stamp = (st.st_ino, st.st_mtime_ns, st.st_size)

    def _add_key(self) -> int:
        new_id = max(self._keys, default=0) + 1
        for key_id, (info, material) in list(self._keys.items()):
            self._keys[key_id] = (KeyInfo(key_id, info.created_at, RETIRING), material)
        self._keys[new_id] = (
            KeyInfo(new_id, _now(), ACTIVE),
            secrets.token_bytes(MATERIAL_BYTES),
        )
        return new_id

    # -- rotation steps (called by sctk.security.rotation under the ring lock) -----------

    def begin_rotation(self) -> int:
        """Add a new active key, mark the others retiring, record the rotation; save."""
        if self._rotation is not None:
            raise SctkError(
                f"A rotation to key {self._rotation.new_key_id} is already in progress in "
                f"{self.path}; run 'sctk keys rotate' to finish it."
            )
        new_id = self._add_key()
        self._rotation = RotationMark(new_id, self._keys[new_id][0].created_at)
        self._save()
        return new_id

    def finish_rotation(self, keep_sessions_until: datetime | None = None) -> list[int]:
        """Remove every key but the newest and clear the rotation mark; save. Returns the ids.

        With KEEP_SESSIONS_UNTIL, the JWTs the retired keys signed still verify until then
        (their JWT subkey is kept, nothing else); without, they end with the keys.
        """
        newest = self.current_id
        retired = sorted(k for k in self._keys if k != newest)
        if keep_sessions_until is None:
            self._retired_jwt.clear()
        else:
            for kid in retired:
                key = _derive(self._keys[kid][1], _JWT_INFO)
                self._retired_jwt[kid] = (key, keep_sessions_until)
        self._keys = {newest: self._keys[newest]}
        self._rotation = None
        self._save()
        return retired

    # -- the public API -----------------------------------------------------------------

    @property
    def keys(self) -> list[KeyInfo]:
        """Every key, oldest first, without material."""
        return [self._keys[k][0] for k in sorted(self._keys)]

    @property
    def current_id(self) -> int:
        """The id of the newest key, the one that encrypts new values."""
        return max(self._keys)

    @property
    def rotation(self) -> RotationMark | None:
        """The unfinished rotation recorded in the file, if any."""
        return self._rotation

    def _material(self, key_id: int) -> bytes | None:
        if key_id not in self._keys:
            self.refresh()  # another process may have rotated since this ring was loaded
        entry = self._keys.get(key_id)
        return None if entry is None else entry[1]

    def _fernet(self, material: bytes) -> Fernet:
        fernet = self._fernets.get(material)
        if fernet is None:
            derived = _derive(material, _FERNET_INFO)
            fernet = self._fernets[material] = Fernet(base64.urlsafe_b64encode(derived))
        return fernet

    def encrypt(self, plaintext: bytes) -> tuple[int, str]:
        """Encrypt with the newest key; returns (key id, token text)."""
        self.refresh()
        key_id = self.current_id
        token = self._fernet(self._keys[key_id][1]).encrypt(plaintext)
        return key_id, token.decode("ascii")

    def decrypt(self, key_id: int, token: str, *, label: str = "A value") -> bytes:
        """The plaintext of TOKEN; SctkError if key KEY_ID is gone or the token is invalid."""
        material = self._material(key_id)
        if material is None:
            raise SctkError(
                f"{label} is encrypted with key {key_id}, which is not "
                f"in {self.path}; restore the keyring saved with the same backup as the database."
            )
        try:
            return self._fernet(material).decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise SctkError(
                f"{label} cannot be decrypted with key {key_id} of "
                f"{self.path}: it was altered, or the keyring was replaced by another one."
            ) from None

    def jwt_key(self, kid: int | None = None) -> tuple[int, bytes]:
        """(kid, HS256 signing key) derived from key KID, or from the newest key when None."""
        if kid is None:
            self.refresh()
            kid = self.current_id
        material = self._material(kid)
        if material is None:
            kept = self._retired_jwt.get(kid)
            if kept is not None and kept[1] > _now():
                return kid, kept[0]
            raise SctkError(f"No key {kid} in {self.path}; the token was signed by another key.")
        key = self._jwt_keys.get(material)
        if key is None:
            key = self._jwt_keys[material] = _derive(material, _JWT_INFO)
        return kid, key

    def bus_key(self, kid: int | None = None) -> tuple[int, bytes]:
        """(kid, HMAC-SHA256 key for bus envelopes) derived from key KID, or the newest key."""
        if kid is None:
            self.refresh()
            kid = self.current_id
        material = self._material(kid)
        if material is None:
            raise SctkError(f"No key {kid} in {self.path}; the message was signed by another key.")
        key = self._bus_keys.get(material)
        if key is None:
            key = self._bus_keys[material] = _derive(material, _BUS_INFO)
        return kid, key
