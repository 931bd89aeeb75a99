"""A sorted chunk index file: chunk lookups served from disk, not from a dict in memory.

The index files of a repository list, per pack, its chunks; holding them as one dict costs
about 300 bytes per chunk. This file holds the same lookups (chunk id -> pack, offset,
length, raw length, flags) in 49 bytes per chunk, sorted by id, and a lookup costs one
positioned read (`pread`) of one bucket, with no mapping: a process that looks up millions
of ids keeps only the bucket table in memory (4 bytes per bucket, at most 4 MiB), not the
pages of the file it touched (a memory map counts them in its resident size).

Layout (little endian):
    header   MAGIC (8 bytes), records n (u64), packs (u64), bucket bits (u32), 4 spare bytes
    buckets  2**bits + 1 u32: index of the first record whose id starts with each prefix
    records  n x (id 32 bytes, pack number u32, offset u32, length u32, raw length u32,
             flags u8), sorted by id; one record per id (the first location given wins)
    packs    packs x pack id (32 bytes), by pack number

Chunk ids are keyed hashes, so their prefixes spread evenly over the buckets: about
RECORDS_PER_BUCKET records each, read in one call and searched in C (bytes.find).
Building it sorts in bounded memory: up to IN_MEMORY records are sorted in memory; beyond,
records are spread over PARTITIONS files by their first byte, then each partition is sorted
on its own and appended.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from sctk.backup.repo.formats import ROW

if TYPE_CHECKING:  # paths are a Path or a str: a verify's worker process opens SortedIndex
    from pathlib import Path  # with no pathlib imported (checkprocs.py, workerloop.py)

MAGIC = b"SCTKIX01"
HEADER = struct.Struct("<8sQQI4x")
RECORD = struct.Struct("<32sIIIIB")
KEY = 32
RECORD_SIZE = RECORD.size  # 49
PACK_ID = 32
RECORDS_PER_BUCKET = 32
MAX_BUCKET_BITS = 20  # a 4 MiB table at most: beyond ~33 million chunks buckets grow instead
PARTITIONS = 256  # the first byte of an id
# Records sorted in memory; more go through partition files. Each pending record is a bytes
# object of ~90 B with its list slot, so this is ~1.5 MiB a builder (verify fills two at
# once): the bound had been 65,536 (~6 MiB each), reached between scale 1 and scale 16 of
# the backup study, most of the peak memory growth left in verify.
IN_MEMORY = 16_384
PACK_CACHE = 4096  # pack ids kept decoded (a restore or verify reads pack after pack)


class SortedIndexError(Exception):
    """The file is not a sorted chunk index (or is truncated)."""


def _bucket_bits(n: int) -> int:
    bits = 1
    while (1 << bits) * RECORDS_PER_BUCKET < n and bits < MAX_BUCKET_BITS:
        bits += 1
    return bits


def build(path: str | Path, packs: Iterable[tuple[str, Iterable]]) -> int:
    """Write the sorted index of PACKS ((pack id, [(chunk id, offset, length, raw length,
    flags)...]), as index files list them, or their rows packed: formats.pack_rows) to PATH,
    atomically; the number of chunk ids.
    Memory: at most IN_MEMORY records, or one partition (1/256 of them) at a time."""
    pack_rec = RECORD.pack
    pending: list[bytes] = []  # records while they are few: sorted here, no partition files
    spill: _Spill | None = None
    pack_ids = bytearray()
    npacks = 0
    try:
        for pack_id, blobs in packs:
            num = npacks
            pack_ids += bytes.fromhex(pack_id)
            npacks += 1
            rows = (
                ROW.iter_unpack(blobs)
                if isinstance(blobs, bytes)
                else ((bytes.fromhex(cid), *rest) for cid, *rest in blobs)
            )
            for key, off, length, raw, flags in rows:
                pending.append(pack_rec(key, num, off, length, raw, flags))
                if len(pending) >= IN_MEMORY:
                    if spill is None:
                        spill = _Spill(path)
                    spill.add(pending)
                    pending = []
        if spill is None:
            return _write_small(path, pending, pack_ids)
        spill.add(pending)
        return spill.finish(pack_ids)
    finally:
        if spill is not None:
            spill.cleanup()


class Builder:
    """What build() writes, with the records given one at a time (add) instead of pulled
    from an iterable: for a pass that fills more than one sorted file as it goes (check's
    walk over the snapshots: the chunks they reference, and where each file content is first
    found). Keys are 32 bytes; the first record given for a key wins, and ON_REPEAT(kept,
    dropped), when given, hears each record dropped with the one kept (both 49-byte records)
    as the file is written. Memory as build()'s."""

    def __init__(self, path: str | Path, on_repeat: Callable[[bytes, bytes], None] | None = None):
        self.path = path
        self.pending: list[bytes] = []
        self.spill: _Spill | None = None
        self.pack_ids = bytearray()
        self.on_repeat = on_repeat

    def pack(self, pack_id: str) -> int:
        """The number of a pack whose id records then name (a record's second field)."""
        self.pack_ids += bytes.fromhex(pack_id)
        return len(self.pack_ids) // PACK_ID - 1

    def add(self, key: bytes, num: int, off: int, length: int, raw: int, flags: int) -> None:
        self.pending.append(RECORD.pack(key, num, off, length, raw, flags))
        if len(self.pending) >= IN_MEMORY:
            if self.spill is None:
                self.spill = _Spill(self.path, self.on_repeat)
            self.spill.add(self.pending)
            self.pending = []

    def finish(self) -> int:
        """Write the file (once); the number of keys."""
        try:
            if self.spill is None:
                return _write_small(self.path, self.pending, self.pack_ids, self.on_repeat)
            self.spill.add(self.pending)
            return self.spill.finish(self.pack_ids)
        finally:
            self.pending = []
            self.cleanup()

    def cleanup(self) -> None:
        if self.spill is not None:
            self.spill.cleanup()
            self.spill = None


def opened(builder: Builder) -> SortedIndex:
    """The file BUILDER writes, finished and open; its name removed at once (the open
    descriptor keeps it readable, and nothing is left behind)."""
    builder.finish()
    try:
        return SortedIndex(builder.path)
    finally:
        os.unlink(builder.path)


def _write(path: str | Path, bits: int, chunks, pack_ids: bytes, header) -> None:
    """The file at PATH, atomically: CHUNKS of records, the pack ids, then the header and
    bucket table from HEADER() -> (records, table bytes), known once CHUNKS are written."""
    part_out = os.fspath(path) + ".tmp"
    with open(part_out, "wb") as out:
        out.seek(HEADER.size + 4 * ((1 << bits) + 1))
        for data in chunks:
            out.write(data)
        out.write(pack_ids)
        n, table = header()
        out.seek(0)
        out.write(HEADER.pack(MAGIC, n, len(pack_ids) // PACK_ID, bits))
        out.write(table)
        out.flush()
        os.fsync(out.fileno())
    os.replace(part_out, path)


def _sorted_unique(recs: list[bytes], on_repeat=None) -> list[bytes]:
    """RECS sorted by id alone, one record an id: a stable sort, so the first location given
    for an id stays first, and wins (ON_REPEAT(kept, dropped) hears the others)."""
    recs.sort(key=lambda rec: rec[:KEY])
    kept: list[bytes] = []
    last = None
    for rec in recs:
        key = rec[:KEY]
        if key != last:
            kept.append(rec)
            last = key
        elif on_repeat is not None:
            on_repeat(kept[-1], rec)
    return kept


def _write_small(path: str | Path, recs: list[bytes], pack_ids: bytes, on_repeat=None) -> int:
    """Few records: sorted in memory by id alone (a stable sort: the first location given
    for an id stays first, and wins)."""
    kept = _sorted_unique(recs, on_repeat)
    bits = _bucket_bits(len(kept))
    shift = 32 - bits
    starts = [0] * ((1 << bits) + 1)
    for rec in kept:
        starts[(int.from_bytes(rec[:4], "big") >> shift) + 1] += 1
    for i in range(1, len(starts)):
        starts[i] += starts[i - 1]
    table = struct.pack(f"<{len(starts)}I", *starts)
    _write(path, bits, [b"".join(kept)], bytes(pack_ids), lambda: (len(kept), table))
    return len(kept)


class _Spill:
    """Many records: spread over PARTITIONS files by their first byte, each sorted on its own
    when the file is written."""

    def __init__(self, path: str | Path, on_repeat=None):
        import tempfile  # here, not at the top: a worker process that only reads imports none

        self.path = path
        self.on_repeat = on_repeat
        self.tmp = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=".sortedindex-")
        self.parts = [open(self._part(i), "wb") for i in range(PARTITIONS)]  # noqa: SIM115
        self.total = 0

    def _part(self, i: int) -> str:
        return os.path.join(self.tmp, f"{i:03d}")

    def add(self, recs: list[bytes]) -> None:
        for rec in recs:
            self.parts[rec[0]].write(rec)
        self.total += len(recs)

    def finish(self, pack_ids: bytes) -> int:
        """Sort each partition on its own (a list of its records: 1/256 of them in memory)
        and append it. Plain Python, not numpy: importing numpy costs a process 12 MiB of
        resident memory, which made every pass over a repository of more than IN_MEMORY
        chunks (prune, restore, verify at scale 16) that much larger than a smaller one's;
        sorting 100,000 records this way takes about as long as numpy's import."""
        for f in self.parts:
            f.close()
        bits = _bucket_bits(self.total)
        shift = 32 - bits
        counts = array("I", bytes(4 * ((1 << bits) + 1)))
        n = 0

        def chunks():
            nonlocal n
            for i in range(PARTITIONS):
                name = self._part(i)
                with open(name, "rb") as f:
                    raw_part = f.read()
                os.unlink(name)
                if not raw_part:
                    continue
                recs = [raw_part[j : j + RECORD_SIZE] for j in range(0, len(raw_part), RECORD_SIZE)]
                del raw_part
                kept = _sorted_unique(recs, self.on_repeat)
                del recs
                for rec in kept:
                    counts[(int.from_bytes(rec[:4], "big") >> shift) + 1] += 1
                n += len(kept)
                yield b"".join(kept)

        def header():
            for b in range(1, len(counts)):
                counts[b] += counts[b - 1]
            return n, counts.tobytes()

        _write(self.path, bits, chunks(), bytes(pack_ids), header)
        return n

    def cleanup(self) -> None:
        for f in self.parts:
            f.close()
        import shutil  # (as tempfile above)

        shutil.rmtree(self.tmp, ignore_errors=True)


class SortedIndex:
    """Lookups in a file written by build(): get(chunk id) -> (pack id, offset, length,
    raw length, flags) or None. Thread-safe (pread has no shared file position)."""

    def __init__(self, path: str | Path):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        try:
            head = os.pread(self.fd, HEADER.size, 0)
            if len(head) != HEADER.size:
                raise SortedIndexError(f"{path} is truncated (no header).")
            magic, self.n, self.npacks, self.bits = HEADER.unpack(head)
            if magic != MAGIC:
                raise SortedIndexError(f"{path} is not a sorted chunk index.")
            tsize = 4 * ((1 << self.bits) + 1)
            table = os.pread(self.fd, tsize, HEADER.size)
            if len(table) != tsize:
                raise SortedIndexError(f"{path} is truncated (its bucket table is cut off).")
            self.starts = memoryview(table).cast("I")  # little endian hosts only (x86, arm)
            self.records_at = HEADER.size + tsize
            self.packs_at = self.records_at + self.n * RECORD_SIZE
            if os.fstat(self.fd).st_size != self.packs_at + self.npacks * PACK_ID:
                raise SortedIndexError(f"{path} has the wrong size (truncated or damaged).")
        except BaseException:
            os.close(self.fd)
            self.fd = -1
            raise
        self.shift = 32 - self.bits
        self._packs: dict[int, str] = {}

    def __len__(self) -> int:
        return self.n

    def _keys(self, lo: int, hi: int) -> list[bytes]:
        """The keys of records LO to HI (sorted, as the file is)."""
        raw = os.pread(self.fd, (hi - lo) * RECORD_SIZE, self.records_at + lo * RECORD_SIZE)
        return [raw[i : i + KEY] for i in range(0, len(raw), RECORD_SIZE)]

    def _spans(
        self, other: SortedIndex, block: int
    ) -> Iterator[tuple[set[bytes], Iterator[bytes]]]:
        """For each block of OTHER's keys (a set of at most BLOCK), this file's records in the
        buckets those keys fall in, read BLOCK records at a time. Both files are sorted, so no
        lookup per key; and the span is read in pieces because a block of a small file's keys
        spans the buckets of all of a large file's: held whole, that was ~80 bytes for each
        chunk of the repository (4 MiB at 47,000 chunks, in a verify's walk of its snapshots)."""

        def pieces(a: int, b: int) -> Iterator[bytes]:
            for lo in range(a, b, block):
                hi = min(b, lo + block)
                yield os.pread(self.fd, (hi - lo) * RECORD_SIZE, self.records_at + lo * RECORD_SIZE)

        for lo in range(0, other.n, block):
            keys = other._keys(lo, min(other.n, lo + block))
            a = self.starts[int.from_bytes(keys[0][:4], "big") >> self.shift]
            b = self.starts[(int.from_bytes(keys[-1][:4], "big") >> self.shift) + 1]
            yield set(keys), pieces(a, b)

    def lacks(self, other: SortedIndex, block: int = 16_384) -> int:
        """How many keys of OTHER this file does not hold (see _spans: a lookup per key is a
        pread and ~2 us of Python, and a check of 10^5 small files spent a third of its CPU
        in them). Memory: a few MiB, whatever the sizes. (No numpy: its import alone is
        16 MiB of resident memory.)"""
        missing = 0
        for theirs, pieces in self._spans(other, block):
            for raw in pieces:
                theirs.difference_update(raw[i : i + KEY] for i in range(0, len(raw), RECORD_SIZE))
            missing += len(theirs)
        return missing

    def held_length(self, other: SortedIndex, block: int = 4096) -> int:
        """The sum of the length fields of this file's records whose keys OTHER holds, in
        the manner of lacks()."""
        total = 0
        for theirs, pieces in self._spans(other, block):
            for raw in pieces:
                for i in range(0, len(raw), RECORD_SIZE):
                    if raw[i : i + KEY] in theirs:
                        total += int.from_bytes(raw[i + 40 : i + 44], "little")
        return total

    def _find(self, key: bytes) -> bytes | None:
        """The record of KEY, or None."""
        b = int.from_bytes(key[:4], "big") >> self.shift
        lo, hi = self.starts[b], self.starts[b + 1]
        if lo == hi:
            return None
        buf = os.pread(self.fd, (hi - lo) * RECORD_SIZE, self.records_at + lo * RECORD_SIZE)
        at = buf.find(key)
        while at >= 0:
            if at % RECORD_SIZE == 0:  # a match straddling two records is no match
                return buf[at : at + RECORD_SIZE]
            at = buf.find(key, at + 1)
        return None

    def get(self, cid: str, default=None):
        try:
            key = bytes.fromhex(cid)
        except ValueError:
            return default
        if len(key) != KEY:
            return default
        rec = self._find(key)
        if rec is None:
            return default
        _, num, off, length, raw, flags = RECORD.unpack(rec)
        pack = self._packs.get(num)
        if pack is None:
            if len(self._packs) >= PACK_CACHE:
                self._packs.clear()
            pack = os.pread(self.fd, PACK_ID, self.packs_at + num * PACK_ID).hex()
            self._packs[num] = pack
        return (pack, off, length, raw, flags)

    def records(self, block: int = 65_536):
        """Every record in id order, as (id bytes, pack number, offset, length, raw length,
        flags), read BLOCK records at a time: a pass that meets every id (a merge of two
        sorted files) reads the file once instead of a bucket an id."""
        at = 0
        while at < self.n:
            count = min(block, self.n - at)
            data = os.pread(self.fd, count * RECORD_SIZE, self.records_at + at * RECORD_SIZE)
            if len(data) != count * RECORD_SIZE:
                raise SortedIndexError(f"{self.path} is truncated (records cut off).")
            yield from RECORD.iter_unpack(data)
            at += count

    def pack_ids(self) -> list[str]:
        """The pack ids by pack number (as records() numbers them)."""
        data = os.pread(self.fd, self.npacks * PACK_ID, self.packs_at)
        return [data[i : i + PACK_ID].hex() for i in range(0, len(data), PACK_ID)]

    def __contains__(self, cid: str) -> bool:
        try:
            key = bytes.fromhex(cid)
        except ValueError:
            return False
        return len(key) == KEY and self._find(key) is not None

    def __getitem__(self, cid: str):
        loc = self.get(cid)
        if loc is None:
            raise KeyError(cid)
        return loc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)

    def __enter__(self) -> SortedIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
