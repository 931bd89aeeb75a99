"""Keys and sealing: the passphrase wraps a random master key; sub-keys come from the master.

The master key is 32 random bytes, stored only wrapped (AES-256-GCM) by a key derived from the
passphrase with a memory-hard KDF: argon2id for new repositories, scrypt for older ones (the
parameters are recorded in the config, so either opens). From the master key come, by
HMAC-SHA256 with distinct labels, the data key (AES-256-GCM for chunks, index, snapshots),
the chunk-id key (chunk ids are a keyed hash, so ids reveal nothing about content to someone
without the key) and the chunker seed (so chunk boundaries do not fingerprint known files).

The keyed hash naming chunks is recorded in the repository config ("chunk_id"): "blake3" (keyed
BLAKE3, 256 bits; new repositories: about twice as fast as SHA-256 here) or "hmac-sha256"
(repositories made before; still read and written with that hash, so their chunks keep
deduplicating).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sctk.backup.repo.errors import RepoError

NONCE = 12
TAG = 16
OVERHEAD = NONCE + TAG

# argon2id cost for new repositories: OWASP's recommended setting (19 MiB, 2 passes, 1 lane),
# the same strength as scrypt N=2^17 r=8 at a sixth of the memory and a tenth of the time
# (about 45 ms), so a one-file restore stays quick and within the memory budget.
ARGON2_T = 2
ARGON2_M_KIB = 19 * 1024
ARGON2_P = 1
MIN_PASSPHRASE = 12  # characters


def check_passphrase(passphrase: str) -> str:
    """PASSPHRASE if it is long enough for a new key; RepoError in one sentence otherwise."""
    if not passphrase:
        raise RepoError("The backup passphrase is empty; set a non-empty passphrase.")
    if len(passphrase) < MIN_PASSPHRASE:
        raise RepoError(
            f"The backup passphrase has {len(passphrase)} characters; use at least "
            f"{MIN_PASSPHRASE} (a few random words are easy to keep and hard to guess)."
        )
    return passphrase


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def derive_wrapping_key(passphrase: str, kdf: dict) -> bytes:
    """The key-encryption key for PASSPHRASE under the repository's KDF parameters."""
    secret = passphrase.encode("utf-8")
    name = kdf.get("name")
    if name == "argon2id":
        from argon2.low_level import Type, hash_secret_raw

        return hash_secret_raw(
            secret,
            unb64(kdf["salt"]),
            time_cost=int(kdf["t"]),
            memory_cost=int(kdf["m"]),
            parallelism=int(kdf["p"]),
            hash_len=32,
            type=Type.ID,
        )
    if name == "scrypt":  # repositories made before argon2id
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        return hashlib.scrypt(
            secret,
            salt=unb64(kdf["salt"]),
            n=n,
            r=r,
            p=p,
            maxmem=2 * 128 * r * n + (1 << 20),
            dklen=32,
        )
    raise RepoError(f"The repository uses an unknown key derivation {name!r}.")


def new_kdf() -> dict:
    """Fresh KDF parameters (argon2id, a new salt) for a new key wrapping."""
    return {
        "name": "argon2id",
        "t": ARGON2_T,
        "m": ARGON2_M_KIB,
        "p": ARGON2_P,
        "salt": b64(os.urandom(16)),
    }


def wrap_master(master: bytes, passphrase: str, kdf: dict, repo_id: str) -> str:
    kek = derive_wrapping_key(passphrase, kdf)
    nonce = os.urandom(NONCE)
    return b64(nonce + AESGCM(kek).encrypt(nonce, master, b"sctk-master-key:" + repo_id.encode()))


def unwrap_master(wrapped: str, passphrase: str, kdf: dict, repo_id: str, url: str) -> bytes:
    kek = derive_wrapping_key(passphrase, kdf)
    raw = unb64(wrapped)
    try:
        return AESGCM(kek).decrypt(raw[:NONCE], raw[NONCE:], b"sctk-master-key:" + repo_id.encode())
    except InvalidTag:
        raise RepoError(
            f"Wrong passphrase for repository {url}; check SCTK_BACKUP_PASSPHRASE "
            "or the passphrase file."
        ) from None


CHUNK_ID_BLAKE3 = "blake3"
CHUNK_ID_HMAC_SHA256 = "hmac-sha256"
CHUNK_ID_ALGORITHMS = (CHUNK_ID_BLAKE3, CHUNK_ID_HMAC_SHA256)
CHUNK_ID_DEFAULT = CHUNK_ID_BLAKE3


class Keys:
    """The sub-keys of one repository and the operations that use them."""

    def __init__(self, master: bytes, chunk_id: str = CHUNK_ID_HMAC_SHA256):
        if chunk_id not in CHUNK_ID_ALGORITHMS:
            raise RepoError(
                f"The repository names chunks with {chunk_id!r}, which this sctk does not know; "
                "upgrade sctk to read it."
            )
        self.master = master
        self.chunk_id_algorithm = chunk_id
        self.data_key = hmac.digest(master, b"sctk-backup data key", "sha256")
        self.id_key = hmac.digest(master, b"sctk-backup chunk id key", "sha256")
        seed = hmac.digest(master, b"sctk-backup chunker seed", "sha256")
        # pyfastcdc XORs the seed into its gear table; any non-zero 63-bit value works.
        self.chunker_seed = (int.from_bytes(seed[:8], "little") & ((1 << 63) - 1)) or 1
        self.aead = AESGCM(self.data_key)
        self._blake3 = None  # loaded on first use: a restore never names chunks

    @classmethod
    def generate(cls, chunk_id: str = CHUNK_ID_DEFAULT) -> Keys:
        return cls(os.urandom(32), chunk_id)  # what secrets.token_bytes gives

    def chunk_id(self, data) -> str:
        """The keyed hash naming a chunk (the repository's algorithm, see the module doc).
        Both release the GIL on large buffers, so writer threads hash in parallel."""
        if self.chunk_id_algorithm == CHUNK_ID_BLAKE3:
            if self._blake3 is None:
                from blake3 import blake3

                self._blake3 = blake3
            return self._blake3(data, key=self.id_key).hexdigest()
        return hmac.digest(self.id_key, data, "sha256").hex()

    def seal(self, data, aad: bytes) -> bytes:
        """nonce || AES-256-GCM(data) with AAD binding the ciphertext to its role/name."""
        nonce = os.urandom(NONCE)
        return nonce + self.aead.encrypt(nonce, data, aad)

    def open(self, blob, aad: bytes) -> bytes:
        """Authenticate and decrypt a sealed blob; InvalidTag if it was altered."""
        view = memoryview(blob)
        return self.aead.decrypt(view[:NONCE], view[NONCE:], aad)
