"""Pieces of file lists that repeat an earlier snapshot's, for a check to go through once.

A backup with a parent copies each piece of the parent's list whose files are all unchanged
as stored (filelist.py): same list id, same place, same sealed bytes, so the same entries.
A check of several snapshots of a slowly changing tree met each such entry once per snapshot
(decrypted, decompressed, decoded as JSON, then merged by path with the other versions, only
to find the content seen already): on 10^6 small files in two snapshots, the second one
unchanged, that was half of the work spent on the lists. The structure pass notes the
SHA-256 of each piece's sealed bytes with its list id and place, and a piece whose digest an
earlier snapshot (in the order checked) holds is a repeat: its entries are not decoded again
there (a repeat holds no chunk or content not referenced already, and the earlier snapshot
names every content first), and the read pass leaves it out of its merge (each of its
versions is one the earlier snapshot holds at the same path).

Memory: 32 bytes and a count for each distinct piece (a piece holds up to 1,000 entries) and
a set of repeated places per snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from sctk.backup.repo.filelist import open_piece


class SamePieces:
    """The digests of the pieces gone through, and each snapshot's repeated pieces."""

    def __init__(self):
        self.entries: dict[bytes, int] = {}  # digest -> entries in the piece
        self.repeats: dict[str, set[int]] = {}  # snapshot id -> places of its repeats
        self._added: list[bytes] = []  # digests the snapshot in progress added...
        self._current = ""  # ...that snapshot

    def files(self, repo, sid: str, decode_repeats: bool, step=None) -> Iterator[dict]:
        """SID's entries in path order, its repeats noted as they go by; a repeat is decoded
        only with DECODE_REPEATS (STEP(n) hears the entries it holds when it is not). A
        version-1 snapshot has no pieces: all its entries."""
        header = repo.snapshot_header(sid)
        if header.get("format") != 2:
            yield from repo.snapshot_files(sid)
            return
        repeats = self.repeats[sid] = set()
        self._added, self._current = [], sid
        for i, blob in _blobs(repo, sid, header):
            digest = _digest(header["list"], i, blob)
            count = self.entries.get(digest)
            if count is not None:
                repeats.add(i)
                if not decode_repeats:
                    if step is not None:
                        step(count)
                    continue
            docs = _open(repo, sid, header, i, blob)
            if count is None:
                self.entries[digest] = len(docs)
                self._added.append(digest)
            del blob
            yield from docs

    def failed(self, sid: str) -> None:
        """SID's list could not be gone through (it is left out of the check): its pieces
        are no one's to repeat, nor is it to be read."""
        if self._current == sid:
            for digest in self._added:
                del self.entries[digest]
            self._added, self._current = [], ""
        self.repeats.pop(sid, None)

    def new_files(self, repo, sid: str) -> Iterator[dict]:
        """SID's entries in path order, its repeats left out."""
        header = repo.snapshot_header(sid)
        if header.get("format") != 2:
            yield from repo.snapshot_files(sid)
            return
        skip = self.repeats.get(sid, set())
        for i in range(len(header["pieces"])):
            if i in skip:
                continue
            # (the sealed bytes let go before the entries are handed out)
            yield from _open(repo, sid, header, i, repo.snapshot_piece_blob(sid, header, i))


def _digest(list_id: str, i: int, blob: bytes) -> bytes:
    """A piece named by its list, its place and its sealed bytes (as its AAD and content)."""
    sha = hashlib.sha256(f"{list_id}:{i}:".encode())
    sha.update(blob)
    return sha.digest()


def _blobs(repo, sid: str, header: dict) -> Iterator[tuple[int, bytes]]:
    for i in range(len(header["pieces"])):
        yield i, repo.snapshot_piece_blob(sid, header, i)


def _open(repo, sid: str, header: dict, i: int, blob: bytes) -> list[dict]:
    return open_piece(repo.keys, f"snapshots/{sid}", header, i, blob)
