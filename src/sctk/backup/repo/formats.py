"""The on-disk formats: sealed JSON files, pack headers, index files, repository layout.

Layout (names relative to the repository root):
    config                   plaintext JSON: id, version, chunker, chunk id algorithm
                             ("blake3" or "hmac-sha256"; absent means hmac-sha256), KDF
                             parameters, wrapped key
    data/<xx>/<sha256>       packs: sealed chunks back to back, then a sealed header, then the
                             header length (4 bytes, little endian)
    index/<sha256>           sealed JSON: pack -> [(chunk id, offset, length, raw length, flags)]
    snapshots/<sha256>       repository version 2: the file list in sealed pieces sorted by
                             path, then a sealed header (time, label, host, manifest, size,
                             added_bytes, files: the count, where the pieces lie): see
                             filelist.py. Version 1 (still read, and written into a version-1
                             repository): one sealed JSON document, the header's fields and
                             files [{path, mode, size, sha256, chunks, st}].
                             An entry's st is [size, mtime_ns, ctime_ns, inode] at backup time
                             (lets the next backup skip unchanged files)
    verified/<sha256>        sealed JSON: snapshot id, time, report of a verification
    locks/<random>           plaintext JSON: pid, host, time, exclusive
Every file except config and locks is named by the SHA-256 of its bytes, so a copy can be
checked against its name and a file is never rewritten.

A sealed blob is nonce (12 bytes) || AES-256-GCM ciphertext and tag. A chunk's AAD is its id
(so the index cannot point a chunk id at another chunk); sealed files use a per-kind AAD.
A chunk's plaintext is zstd-compressed (flag 1) or stored as it is (flag 0): the writer decides
(see compression.py), readers only follow the flag.
"""

from __future__ import annotations

import hashlib
import json
import struct

import zstandard
from cryptography.exceptions import InvalidTag

from sctk.backup.repo.crypto import Keys
from sctk.backup.repo.errors import RepoError

FORMAT = "sctk-backup-repository"
VERSION = 2  # what a new repository is made with (see filelist.py); `upgrade` moves 1 to 2
VERSIONS = (1, 2)  # what this sctk reads
FLAG_ZSTD = 1

AAD_SNAPSHOT = b"sctk-snapshot"
AAD_INDEX = b"sctk-index"
AAD_VERIFIED = b"sctk-verified"
AAD_PACK_HEADER = b"sctk-pack-header"


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


def content_id(data) -> str:
    return hashlib.sha256(data).hexdigest()


def seal_json(keys: Keys, obj, aad: bytes) -> bytes:
    raw = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return keys.seal(zstandard.ZstdCompressor(level=3).compress(raw), aad)


# A chunk row packed (chunk id, offset, length, raw length, flags): 49 bytes, where the same
# row decoded from an index file is ~300 bytes of Python objects.
ROW = struct.Struct("<32sIIIB")


def pack_rows(rows) -> bytes:
    """ROWS ((chunk id in hex, offset, length, raw length, flags) each) packed, ROW a row."""
    return b"".join(ROW.pack(bytes.fromhex(r[0]), *r[1:5]) for r in rows)


def unpack_rows(data) -> list[tuple]:
    """The rows pack_rows packed into DATA."""
    return [(k.hex(), *rest) for k, *rest in ROW.iter_unpack(data)]


def open_json(keys: Keys, blob: bytes, aad: bytes, what: str, object_hook=None):
    """Decrypt and parse a sealed JSON file (OBJECT_HOOK as json.loads takes it); RepoError
    naming WHAT if it was altered."""
    try:
        raw = keys.open(blob, aad)
    except (InvalidTag, ValueError, IndexError):
        raise RepoError(f"The {what} is damaged (it fails authentication).") from None
    try:
        return json.loads(zstandard.ZstdDecompressor().decompress(raw), object_hook=object_hook)
    except (zstandard.ZstdError, ValueError, IndexError, TypeError, struct.error):
        # sealed with the key, yet not what sctk writes (a writer's bug, or a key holder's)
        raise RepoError(f"The {what} is damaged (it is not what sctk writes).") from None


def _packed_pack(obj: dict):
    """An index file's pack ({id, size, blobs}) as (id, size, its rows packed), as soon as
    it is decoded; any other object as it is."""
    if "blobs" in obj and "id" in obj:
        return obj["id"], obj["size"], pack_rows(obj["blobs"])
    return obj


def open_index(keys: Keys, blob: bytes, what: str) -> dict:
    """A sealed index file: {"packs": [(pack id, size, rows packed)], "damaged": [...]}.

    Each pack's rows are packed as the pack is decoded, so the rows that are Python objects
    at once are one pack's, not the file's: decoded whole, a file of 10,000 rows was ~4 MiB
    of objects, and the allocator's pages it took stayed with the process (a verify or
    restore of the reference data set at scale 16 held 6-7 MiB more to its end than at
    scale 1, where the one index file is half as full)."""
    return open_json(keys, blob, AAD_INDEX, what, object_hook=_packed_pack)


def encode_pack_tail(keys: Keys, entries: list[list]) -> bytes:
    """The sealed header listing a pack's chunks, followed by its length."""
    header = seal_json(keys, entries, AAD_PACK_HEADER)
    return header + struct.pack("<I", len(header))


def decode_pack_header(keys: Keys, data: bytes, name: str) -> tuple[list[list], int]:
    """Parse the tail of a whole pack (or of its last bytes): (entries, header start offset)."""
    if len(data) < 4:
        raise RepoError(f"Pack {name} is truncated (no header).")
    (hlen,) = struct.unpack("<I", data[-4:])
    if hlen + 4 > len(data):
        raise RepoError(f"Pack {name} is truncated (its header is cut off).")
    header = data[-4 - hlen : -4]
    entries = open_json(keys, header, AAD_PACK_HEADER, f"header of pack {name}")
    return entries, len(data) - 4 - hlen
