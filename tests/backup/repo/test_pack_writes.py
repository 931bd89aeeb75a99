"""Packs written from many small chunks: gathered and written WRITE_BUFFER at a time (a
write per chunk under the writers' pack lock kept the storing threads waiting on one
another), with every chunk where the pack's rows say and the pack named by the SHA-256 of
its bytes."""

from __future__ import annotations

import hashlib
import os

from sctk.backup.repo import packs
from sctk.backup.repo.formats import pack_name
from sctk.backup.repo.packs import PackWriter


def test_small_chunks_are_written_together_and_land_where_the_rows_say(repo):
    written: list[tuple] = []
    appends = []
    real_new_pack = repo.backend.new_pack

    def new_pack(folder):
        pack = real_new_pack(folder)
        real_append = pack.append

        def append(parts):
            appends.append(sum(len(p) for p in parts))
            real_append(parts)

        pack.append = append
        return pack

    repo.backend.new_pack = new_pack
    writer = PackWriter(repo.backend, repo.keys, lambda *item: written.append(item))
    sent = {}
    # small chunks, one at the limit, a large one between them
    sizes = [3000] * 2000 + [packs.GATHER_BELOW, 2 * packs.WRITE_BUFFER] + [5000] * 500
    for size in sizes:
        data = os.urandom(size)
        cid = hashlib.sha256(data).hexdigest()
        sent[cid] = data
        writer.add(cid, 0, size, (data[:12], data[12:]))
    writer.flush()

    # a write per WRITE_BUFFER gathered (and the large ones' own), not one per chunk
    assert len(appends) <= sum(sizes) // packs.WRITE_BUFFER + 6
    assert len(appends) < len(sizes) / 50
    got = {}
    for pack_id, size, blobs in written:
        raw = (repo.backend.root / pack_name(pack_id)).read_bytes()
        assert len(raw) == size
        assert hashlib.sha256(raw).hexdigest() == pack_id
        for cid, off, length, _raw_len, _flags in blobs:
            got[cid] = raw[off : off + length]
    assert got == sent
