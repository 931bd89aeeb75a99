"""Files of one chunk (most small files) read, decrypted, decompressed and hashed by worker
processes in a verify of a local repository: what a worker runs and is given (check.py
starts them through workerprocs.py; this module imports nothing of that side, see
workerloop.py).

A verifier thread spends a few KB of work between system calls on such a file (its chunk's
read, decryption, decompression and hash each let the interpreter lock go), so with threads
the hand-offs of the lock set the pace: one core's worth on two, 0.5-0.6x restic's verify of
10^5 and 10^6 files of a few KB (benchmarks/RESULTS.md). A worker is given the chunks'
ids (and the locations learnt since the index was loaded), and looks the others up in the
index's sorted file; it answers each chunk's location and SHA-256 or why it could not be
read, and knows nothing else of the repository.
"""

from __future__ import annotations

import hashlib
from array import array

from sctk.backup.repo import workerloop
from sctk.backup.repo.chunkread import LocalReader
from sctk.backup.repo.crypto import Keys
from sctk.backup.repo.sortedindex import SortedIndex


def _setup(init: tuple) -> tuple:
    root, master, algorithm, index_path = init
    index = SortedIndex(index_path) if index_path else None
    return LocalReader(root, Keys(master, algorithm).aead), index


def hash_chunks(state: tuple, files: list[tuple]) -> tuple[tuple, bytes]:
    """Each (chunk id, location or None, SHA-256 expected) of FILES (files of one chunk)
    read and hashed; a chunk given no location is looked up in the sorted index file.
    Answers in a few objects whatever the batch's size, so that the check's process spends
    no Python per file that is sound: ((problems, offsets read, stored bytes read, packs),
    no raw bytes). PROBLEMS: {position: (SHA-256 found or None, why the chunk cannot be
    read or None, its pack or None)}; OFFSETS: {pack: array of the offsets of the chunks
    read}; PACKS: those of every chunk located."""
    reader, index = state
    problems: dict[int, tuple] = {}
    offsets: dict[str, array] = {}
    packs: set[str] = set()
    nbytes = 0
    for k, (cid, loc, expected) in enumerate(files):
        if loc is None and index is not None:
            loc = index.get(cid)
        if loc is None:  # (the structure pass names the file)
            problems[k] = (None, f"its chunk {cid[:12]} is in no index", None)
            continue
        pack, off, length = loc[0], loc[1], loc[2]
        packs.add(pack)
        nbytes += length
        sha = hashlib.sha256()
        err = reader.read(cid, loc, sha.update)
        if err is not None:
            problems[k] = (None, err.reason, pack)
            continue
        if (offs := offsets.get(pack)) is None:
            offs = offsets[pack] = array("I")
        offs.append(off)
        if (digest := sha.hexdigest()) != expected:
            problems[k] = (digest, None, pack)
    return (problems, offsets, nbytes, packs), b""


def serve() -> None:
    """A worker process: the repository's path, keys and sorted index file first (init()),
    then batches of chunks."""
    workerloop.serve(_setup, hash_chunks)


ENTRY = (__name__, "serve")


def init(repo) -> tuple:
    """What a worker hashing chunks of REPO (a local repository) for one verify is given: it
    looks chunks up in the index's sorted file itself (a lookup is a positioned read: in the
    check's process, each was a hand-off of its interpreter lock)."""
    keys = repo.keys
    base = repo.index.entries.base
    return (
        str(repo.backend.root),
        keys.master,
        keys.chunk_id_algorithm,
        None if base is None else str(base.path),
    )
