"""How chunks are compressed: raw, zstd level 1 or level 3, learnt per file by trials
(sctk.backup.repo.compression). Whatever the writer chose, chunks read back, verify and
restore the same, and damage to a raw chunk is caught like damage to a compressed one."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from sctk.backup.repo import RepoError, compression
from sctk.backup.repo.compression import FAST, RAW, STRONG, Compressors, FilePolicy, choose
from sctk.backup.repo.formats import FLAG_ZSTD
from tests.backup.repo.conftest import backup, damage_chunk, tree_bytes

MiB = 1 << 20


def _csv(rnd: random.Random, size: int) -> bytes:
    """SIZE bytes of CSV rows (each at least 20 bytes long)."""
    rows = (f"{i},{rnd.random():.6f},sensor-{rnd.randrange(40)},ok\n" for i in range(size // 20))
    return "".join(rows).encode()[:size]


def _noise(seed: int, size: int) -> bytes:
    """Measurement noise as float64: zstd saves about 4% on it (the exponent bytes)."""
    return np.random.default_rng(seed).standard_normal(size // 8).tobytes()


def _flags(repo, info, path: str) -> list[int]:
    entry = next(e for e in repo.files(info.id) if e.path == path)
    return [repo.index.entries[c][4] for c in entry.chunks]


def test_choose_raw_fast_strong():
    assert choose(1000, 980, 960) == RAW  # even the better level keeps over 95%
    assert choose(1000, 300, 298) == FAST  # level 1 within 1% of level 3
    assert choose(1000, 280, 300) == FAST  # level 1 smaller still
    assert choose(1000, 800, 600) == STRONG


def test_trials_pick_the_choice_for_the_chunks_after_them():
    rnd = random.Random(3)
    comp = Compressors()
    noise = FilePolicy(trials=True)
    assert noise.next_is_trial()
    payload, flags = comp.compress(rnd.randbytes(MiB), noise, trial=True)
    noise.trial_done()
    assert noise.choice == RAW
    assert not noise.next_is_trial()
    chunk = rnd.randbytes(MiB)
    assert comp.compress(chunk, noise, trial=False) == (chunk, 0)  # not even tried

    text = FilePolicy(trials=True)
    text.next_is_trial()
    payload, flags = comp.compress(_csv(rnd, MiB), text, trial=True)
    text.trial_done()
    assert flags == FLAG_ZSTD and len(payload) < MiB // 2
    assert text.choice in (FAST, STRONG)


def test_hardly_compressible_large_file_is_stored_raw_and_verified(repo, tmp_path):
    rnd = random.Random(5)
    src = tmp_path / "src"
    src.mkdir()
    (src / "noise.bin").write_bytes(_noise(5, 9 * MiB))  # read in blocks: trials
    (src / "table.csv").write_bytes(_csv(rnd, 9 * MiB))
    info = backup(repo, src)
    # The trial chunk keeps its 4% saving; the chunks after it are not even compressed.
    first, *rest = _flags(repo, info, "noise.bin")
    assert first == FLAG_ZSTD and rest and set(rest) == {0}
    assert set(_flags(repo, info, "table.csv")) == {FLAG_ZSTD}
    assert repo.check(read_data=True).ok
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)


def test_damaged_raw_chunk_is_detected(repo, tmp_path):
    rnd = random.Random(6)
    src = tmp_path / "src"
    src.mkdir()
    (src / "noise.bin").write_bytes(rnd.randbytes(6 * MiB))
    info = backup(repo, src)
    entry = repo.files(info.id)[0]
    assert repo.index.entries[entry.chunks[-1]][4] == 0  # its flags: stored raw
    damage_chunk(repo, entry.chunks[-1], mask=0x40)

    report = repo.check(read_data=True)
    assert not report.ok
    assert any("noise.bin" in e and "fails authentication" in e for e in report.errors)
    with pytest.raises(RepoError, match="nothing was restored"):
        repo.restore(info.id, tmp_path / "out")


def test_file_changing_kind_is_followed_by_later_trials(repo, tmp_path, monkeypatch):
    monkeypatch.setattr(compression, "TRIAL_EVERY", 4)
    rnd = random.Random(7)
    src = tmp_path / "src"
    src.mkdir()
    (src / "mixed.bin").write_bytes(rnd.randbytes(8 * MiB) + _csv(rnd, 16 * MiB))
    info = backup(repo, src)
    flags = _flags(repo, info, "mixed.bin")
    assert flags[0] == 0 and flags[-1] == FLAG_ZSTD
    stored = sum(repo.index.entries[c][2] for c in repo.files(info.id)[0].chunks)
    assert stored < 8 * MiB + 8 * MiB  # the text half was compressed
    assert repo.check(read_data=True).ok


def test_trial_on_a_stored_chunk_and_a_failed_trial_never_leave_chunks_waiting(
    repo, tmp_path, monkeypatch
):
    rnd = random.Random(8)
    src = tmp_path / "src"
    src.mkdir()
    head = _csv(rnd, 6 * MiB)
    (src / "grows.csv").write_bytes(head)
    backup(repo, src)
    (src / "grows.csv").write_bytes(head + _csv(rnd, 6 * MiB))  # first chunk stored already
    info = backup(repo, src)
    assert repo.check(read_data=True).ok
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)

    def broken(self, data, policy):
        raise MemoryError("no room for a trial")

    monkeypatch.setattr(Compressors, "_trial", broken)
    (src / "new.csv").write_bytes(_csv(rnd, 6 * MiB))
    raised: list[BaseException] = []

    def run() -> None:
        try:
            backup(repo, src)
        except BaseException as exc:  # handed to the test thread
            raised.append(exc)

    worker = threading.Thread(target=run, daemon=True)  # a hang must fail, not block the suite
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the file's other chunks waited forever for a failed trial"
    assert isinstance(raised[0], MemoryError)


def test_repository_written_at_level_3_everywhere_still_verifies_and_grows(
    repo, tmp_path, monkeypatch
):
    """What the writer stored before it learnt levels (level 3 for every chunk that shrank)
    reads, verifies and restores as before, also with new backups mixed in."""
    rnd = random.Random(9)
    src = tmp_path / "src"
    src.mkdir()
    (src / "noise.bin").write_bytes(_noise(9, 6 * MiB))
    (src / "table.csv").write_bytes(_csv(rnd, 6 * MiB))
    with monkeypatch.context() as m:
        m.setattr(compression, "choose", lambda size, fast, strong: STRONG)
        old = backup(repo, src)
    # 4% saved: compressed, as before. Chunk boundaries follow the repository's own key, so
    # a file's last chunk may be a few bytes that no compression shrinks: stored raw.
    entry = next(e for e in repo.files(old.id) if e.path == "noise.bin")
    rows = [repo.index.entries[c] for c in entry.chunks]
    assert all(flags == FLAG_ZSTD for *_, raw, flags in rows[:-1]), rows
    assert rows[-1][4] == FLAG_ZSTD or rows[-1][3] < 4096, rows[-1]
    (src / "more.csv").write_bytes(_csv(rnd, 6 * MiB))
    new = backup(repo, src)
    assert repo.check(read_data=True).ok
    for info in (old, new):
        target = tmp_path / info.id[:8]
        repo.restore(info.id, target)
        expected = {
            k: v for k, v in tree_bytes(src).items() if k in {e.path for e in repo.files(info.id)}
        }
        assert tree_bytes(target) == expected
