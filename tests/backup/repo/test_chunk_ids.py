"""Chunk ids and chunking: the id algorithm is recorded per repository (keyed BLAKE3 for new
ones; repositories made with HMAC-SHA256 ids, or before the algorithm was recorded, still open,
back up, verify and restore), and the block reader cuts exactly where pyfastcdc's stream
chunker cuts (so chunks keep deduplicating across versions)."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import random
from pathlib import Path

import pytest
from pyfastcdc import FastCDC

from sctk.backup.repo import RepoError, Repository
from sctk.backup.repo import writer as writer_mod
from tests.backup.repo.conftest import PASSPHRASE, backup, make_tree, tree_bytes


def _config(repo: Repository) -> dict:
    return json.loads(Path(repo.url, "config").read_text())


def test_new_repository_records_keyed_blake3(repo, tree, tmp_path):
    assert _config(repo)["chunk_id"] == "blake3"
    info = backup(repo, tree)
    entry = next(e for e in repo.files(info.id) if e.path == "deep/a/b/c/small.dat")
    data = (tree / "deep/a/b/c/small.dat").read_bytes()
    from blake3 import blake3

    assert entry.chunks == [blake3(data, key=repo.keys.id_key).hexdigest()]
    reopened = Repository.open(repo.url, PASSPHRASE)
    assert reopened.keys.chunk_id_algorithm == "blake3"
    assert reopened.check(read_data=True).ok


@pytest.mark.parametrize("recorded", [True, False])
def test_hmac_sha256_repository_still_opens_backs_up_and_verifies(tmp_path, recorded):
    """A repository with HMAC-SHA256 chunk ids (recorded as such, or made before the
    algorithm was recorded at all) keeps its ids: a new backup deduplicates against it."""
    url = str(tmp_path / "old")
    Repository.init(url, PASSPHRASE, chunk_id="hmac-sha256")
    if not recorded:
        config_path = Path(url, "config")
        config = json.loads(config_path.read_text())
        del config["chunk_id"]
        config_path.write_text(json.dumps(config, indent=1))
    src = tmp_path / "src"
    make_tree(src)
    repo = Repository.open(url, PASSPHRASE)
    assert repo.keys.chunk_id_algorithm == "hmac-sha256"
    first = backup(repo, src)
    entry = next(e for e in repo.files(first.id) if e.path == "keys/secret.key")
    data = (src / "keys/secret.key").read_bytes()
    assert entry.chunks == [hmac.digest(repo.keys.id_key, data, "sha256").hex()]

    again = Repository.open(url, PASSPHRASE)
    second = backup(again, src)
    assert second.added_bytes == 0  # same ids as before: everything deduplicated
    report = again.check(read_data=True)
    assert report.ok, report.errors
    again.restore(second.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)


def test_unknown_chunk_id_algorithm_is_one_sentence(tmp_path):
    url = str(tmp_path / "repo")
    with pytest.raises(RepoError, match="Unknown chunk id algorithm"):
        Repository.init(url, PASSPHRASE, chunk_id="md5")
    Repository.init(url, PASSPHRASE)
    config_path = Path(url, "config")
    config = json.loads(config_path.read_text())
    config["chunk_id"] = "sha3-512"
    config_path.write_text(json.dumps(config))
    with pytest.raises(RepoError, match="names chunks with 'sha3-512'.*upgrade sctk"):
        Repository.open(url, PASSPHRASE)


class _Cutter(writer_mod.SnapshotWriter):
    """Just the block cutter of a writer (no repository)."""

    def __init__(self, cdc: FastCDC, max_size: int):
        self._cdc = cdc
        self._max_chunk = max_size
        self._free_blocks = []


@pytest.mark.parametrize("seed", range(12))
def test_block_reader_cuts_where_the_stream_chunker_cuts(seed, monkeypatch):
    rnd = random.Random(seed)
    min_size, avg, max_size = rnd.choice([(1024, 2048, 8192), (64, 256, 1024)])
    cdc = FastCDC(avg, min_size=min_size, max_size=max_size, seed=rnd.randrange(1, 1 << 40))
    size = rnd.choice([0, 1, max_size, max_size + 1, rnd.randrange(0, 30 * max_size)])
    data = bytes(size) if seed % 4 == 0 else rnd.randbytes(size)
    # Blocks smaller and larger than the biggest chunk, so carries of every length occur.
    monkeypatch.setattr(writer_mod, "READ_BLOCK", rnd.choice([max_size // 2 + 1, 3 * max_size]))
    expected = [bytes(c.data) for c in cdc.cut_stream(io.BytesIO(data))]
    got = [bytes(c) for c, _block in _Cutter(cdc, max_size)._cut_blocks(io.BytesIO(data).readinto)]
    assert got == expected
    assert b"".join(got) == data


def test_large_file_round_trip_through_reused_blocks(repo, tmp_path, monkeypatch):
    """Small read blocks, so blocks are reused many times while chunks are in flight: every
    byte still lands where it belongs (a block reused too early would corrupt chunks)."""
    monkeypatch.setattr(writer_mod, "READ_BLOCK", 5 * 1024 * 1024)
    rnd = random.Random(7)
    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    parts = [rnd.randbytes(1 << 20) if i % 3 else bytes([i]) * (1 << 20) for i in range(40)]
    big.write_bytes(b"".join(parts))
    info = backup(repo, big.parent)
    entry = repo.files(info.id)[0]
    assert entry.sha256 == hashlib.sha256(big.read_bytes()).hexdigest()
    assert repo.check(read_data=True).ok
    repo.restore(info.id, tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == big.read_bytes()
