"""Verify with files of one chunk read by worker processes (checkprocs.py): the same findings
as threads on a sound and on a damaged repository, a worker killed mid-verify, the verify
itself killed, a machine where no worker can start, one snapshot checked."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from sctk.backup.repo import check as check_module
from tests.backup.repo.conftest import PASSPHRASE, backup, damage_chunk, small_files

SRC = Path(__file__).resolve().parents[3] / "src"
FILES = 2500  # past check.PROCESSES_AFTER, so the automatic choice starts processes too


def _small_files(root: Path, n: int = FILES) -> None:
    small_files(root, n, seed=3, dirs=13, most=5000)
    (root / "big.bin").write_bytes(random.Random(3).randbytes(3_000_000))  # several chunks


def _workers() -> list[psutil.Process]:
    """This process's worker processes (checkprocs.serve), as the check runs."""
    return [
        p
        for p in psutil.Process().children()
        if "sctk.backup.repo.checkprocs" in " ".join(p.cmdline())
    ]


@pytest.fixture
def small(repo, tmp_path):
    src = tmp_path / "src"
    _small_files(src)
    first = backup(repo, src)
    for p in sorted(src.rglob("*.dat"))[::7]:  # a second snapshot, a seventh changed
        p.write_bytes(os.urandom(2000))
    second = backup(repo, src)
    return repo, first, second


def _check(repo, processes, **kw):
    """The report, and the most worker processes seen while files were read."""
    calls = [0]
    most = [0]

    def progress(n: int) -> None:
        calls[0] += 1
        if calls[0] % 40 == 0:  # listing the children costs a few ms
            most[0] = max(most[0], len(_workers()))

    report = repo.check(read_data=True, progress=progress, processes=processes, **kw)
    return report, most[0]


def test_the_automatic_choice_verifies_many_small_files_in_processes(small):
    repo, _first, _second = small
    with_procs, most = _check(repo, None)
    assert most >= 2, "no worker process while the files were read"
    threads, most = _check(repo, False)
    assert most == 0
    assert with_procs.ok and threads.ok
    assert with_procs.bytes_read == threads.bytes_read
    assert _workers() == []  # ended with the check


def test_damaged_and_missing_chunks_are_found_as_threads_find_them(small, tmp_path):
    repo, first, second = small

    def one_chunk(sid):
        return [f for f in repo.snapshot_files(sid) if len(f["chunks"]) == 1 and f["size"] > 100]

    def pack_of(f):
        return repo.index.entries[f["chunks"][0]][0]

    hurt = one_chunk(first.id)[100::1500]
    first_packs = {pack_of(f) for f in one_chunk(first.id)}
    gone = next(f for f in one_chunk(second.id) if pack_of(f) not in first_packs)
    damage_chunk(repo, hurt[0]["chunks"][0])
    damage_chunk(repo, hurt[1]["chunks"][0], mask=0x80)
    lost = pack_of(gone)
    Path(repo.url, "data", lost[:2], lost).unlink()
    procs = repo.check(read_data=True, processes=True)
    threads = repo.check(read_data=True, processes=False)
    assert not procs.ok
    assert procs.errors == threads.errors
    for f in hurt:
        assert any(f["path"] in e and "cannot be restored" in e for e in procs.errors)
    assert any(gone["path"] in e for e in procs.errors)
    assert procs.bytes_read == threads.bytes_read
    # the damage found is recorded: the next backup stores those chunks again
    assert repo.index.damaged


def test_a_worker_killed_mid_verify_leaves_its_batches_to_this_process(small, monkeypatch):
    """The worker is stopped first, so batches are queued to it unanswered when it is
    killed; they are verified in the check's process, the rest by threads."""
    repo, _first, _second = small
    monkeypatch.setattr(check_module, "BATCH_GROUPS", 8)  # many batches in turn
    calls: list[int] = []
    victim: list[int] = []

    def progress(n: int) -> None:
        calls.append(n)
        if not victim and (pids := [p.pid for p in _workers()]):
            os.kill(pids[0], signal.SIGSTOP)
            victim.append(pids[0])
        elif victim and len(calls) == 60:
            os.kill(victim[0], signal.SIGKILL)

    report = repo.check(read_data=True, progress=progress, processes=True)
    assert victim and len(calls) > 60, "the worker was not killed mid-verify"
    assert report.ok, report.errors
    assert report.bytes_read == repo.check(read_data=True, processes=False).bytes_read
    assert _workers() == []


@pytest.mark.parametrize("python", ["/nonexistent/python3", "/bin/false"])
def test_where_no_worker_can_start_threads_verify_the_files(small, monkeypatch, python):
    repo, first, _second = small
    monkeypatch.setattr(sys, "executable", python)
    damage_chunk(
        repo, next(f for f in repo.snapshot_files(first.id) if f["size"] > 100)["chunks"][0]
    )
    report = repo.check(read_data=True, processes=True)
    assert not report.ok and any("cannot be restored" in e for e in report.errors)


def test_one_snapshot_checked_with_processes_reads_what_threads_read(small):
    repo, first, _second = small
    procs = repo.check(read_data=True, snapshot_id=first.id, processes=True)
    threads = repo.check(read_data=True, snapshot_id=first.id, processes=False)
    assert procs.ok and threads.ok
    assert procs.bytes_read == threads.bytes_read


def test_processes_start_only_past_the_threshold(repo, tmp_path, monkeypatch):
    src = tmp_path / "src"
    _small_files(src, n=50)
    backup(repo, src)
    monkeypatch.setattr(check_module, "PROCESSES_AFTER", 10**9)
    report, most = _check(repo, None)
    assert report.ok and most == 0


def test_where_larger_files_hold_the_bytes_no_worker_starts_unless_asked_for(
    repo, tmp_path, monkeypatch
):
    """300 small files beside one of 30 MB (a mean over SMALL_MEAN): no worker, however
    many files (the threads do the larger files' work in C, and a worker bought little
    time for its memory); asked for, one per core."""
    src = tmp_path / "src"
    small_files(src, 300, seed=5, most=5000)
    (src / "big.bin").write_bytes(random.Random(5).randbytes(30_000_000))
    backup(repo, src)
    monkeypatch.setattr(check_module, "BATCH_GROUPS", 2)  # many progress calls to sample at
    monkeypatch.setattr(check_module, "PROCESSES_AFTER", 100)
    report, most = _check(repo, None)
    assert report.ok and most == 0, f"{most} workers, not none"
    report, most = _check(repo, True)  # asked for: one per core
    assert report.ok and most == check_module.process_count()


_KILLED_CHECK = """
import os, sys, time
from sctk.backup.repo import Repository

repo = Repository.open(sys.argv[1], sys.argv[2])

def progress(n):
    import psutil
    kids = [p.pid for p in psutil.Process().children()]
    if len(kids) >= 2:
        print(*kids, flush=True)
        time.sleep(120)  # killed here, its workers mid-batch

repo.check(read_data=True, progress=progress, processes=True)
"""


def _alive(pid: int) -> bool:
    """Process PID runs (a zombie no one reaps counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_verify_killed_leaves_no_worker_behind(small):
    """kill -9 of the verifying process: each worker reads the end of its stdin and exits."""
    repo, _first, _second = small
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHECK, repo.url, PASSPHRASE],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) >= 2, pids
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    end = time.monotonic() + 10
    while time.monotonic() < end and any(_alive(p) for p in pids):
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids), "a worker outlived its verify"
    assert repo.check(read_data=True).ok  # a check killed changes nothing


# What the modules a worker runs must not import: the starting side's (subprocess,
# threading's futures with logging) and the building side of the sorted index's (tempfile,
# shutil), or pathlib: ~3 MiB of each worker's own memory before it read anything.
STARTER_SIDE = ("subprocess", "concurrent.futures", "logging", "pathlib", "tempfile", "shutil")


@pytest.mark.parametrize("entry", ["sctk.backup.repo.checkprocs", "sctk.backup.repo.workerloop"])
def test_a_worker_imports_only_what_it_runs(entry):
    code = f"import sys, {entry}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(SRC)!r}); {code}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert [m for m in STARTER_SIDE if m in out] == []


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_reader_s_buffers_are_resident_only_where_written(tmp_path):
    """Three 1 MiB buffers a reader (a verifier thread, a worker process): a bytearray of
    that size is zero-filled at once, 3 MiB resident before a byte was read."""
    from sctk.backup.repo.chunkread import BUFFER, LocalReader

    before = _rss_kib()
    readers = [LocalReader(str(tmp_path), aead=None) for _ in range(8)]
    grown = _rss_kib() - before
    assert grown < 1024, f"8 readers made {grown} KiB resident"  # were 24 MiB
    view = memoryview(readers[0].plainbuf)
    view[:BUFFER] = bytes(BUFFER)  # written: resident, and the whole buffer usable
    assert _rss_kib() - before >= grown + BUFFER // 1024 - 64
