"""Worker processes sealing small files (batchseal.py): what a killed worker, a killed
writer, a script without a main guard, a machine where no worker can start, and files
whose content is stored already do to a backup."""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sctk.backup.repo import RepoError
from sctk.backup.repo.workerprocs import ANSWER_PIPE
from tests.backup.repo.conftest import PASSPHRASE, backup, small_files, tree_bytes

SRC = Path(__file__).resolve().parents[3] / "src"
FILES = 3000  # past writer.PROCESSES_AFTER, so the automatic choice starts processes too
MIDWAY = "d05/f00175.dat"  # (the walk goes d00 to d16) about a third of the way


def _small_files(root: Path, n: int = FILES) -> None:
    small_files(root, n, seed=5)


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether process PID has exited (a zombie no one reaps counts) within WITHIN s."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_the_automatic_choice_seals_many_small_files_in_processes(repo, tmp_path):
    src = tmp_path / "src"
    _small_files(src)
    with repo.writer() as w:
        w.add_tree(src)
        started = w._procs.procs is not None
        # a whole answer fits the pipe: the worker does not wait for the reading thread
        workers = [x.proc.pid for x in w._procs.procs._workers]
        pipes = [
            fcntl.fcntl(x.proc.stdout.fileno(), fcntl.F_GETPIPE_SZ) for x in w._procs.procs._workers
        ]
        info = w.commit("manual", {})
        # stopped by the commit, before the index and the snapshot are written: their
        # memory is not held beside the writer's
        assert workers and all(_gone(pid, within=5) for pid in workers)
    assert started
    assert pipes and all(p == ANSWER_PIPE for p in pipes)
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)
    assert repo.check(read_data=True).ok


def test_a_worker_killed_mid_backup_fails_it_in_one_sentence_and_commits_nothing(repo, tmp_path):
    src = tmp_path / "src"
    _small_files(src)
    pids: list[int] = []

    def kill_a_worker(path: str) -> bool:
        if path == MIDWAY:  # batches are in flight
            workers = w._procs.procs._workers
            pids.extend(x.proc.pid for x in workers)
            os.kill(workers[0].proc.pid, signal.SIGKILL)
            assert _gone(workers[0].proc.pid)
        return False

    with (
        pytest.raises(RepoError, match=r"worker process stopped .*nothing was committed"),
        repo.writer(processes=True) as w,
    ):
        w.add_tree(src, exclude=kill_a_worker)
        w.commit("manual", {})
    assert pids and all(_gone(p) for p in pids)  # the other worker ended with the writer
    assert repo.snapshots() == []
    assert repo.check(read_data=True).ok
    info = backup(repo, src, processes=True)  # nothing the dead run left is in the way
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from sctk.backup.repo import Repository

repo = Repository.open(sys.argv[1], sys.argv[3])
with repo.writer(processes=True) as w:
    def pause(path):
        if path == sys.argv[4]:
            print(*(x.proc.pid for x in w._procs.procs._workers), flush=True)
            time.sleep(120)  # killed here
        return False
    w.add_tree(Path(sys.argv[2]), exclude=pause)
"""


def test_a_writer_killed_leaves_no_worker_behind(repo, tmp_path):
    src = tmp_path / "src"
    _small_files(src)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, repo.url, str(src), PASSPHRASE, MIDWAY],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) >= 2
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.stdout.close()
    # each worker reads the end of its stdin once the writer is gone, and exits
    assert all(_gone(p) for p in pids), "a worker outlived its writer"
    info = backup(repo, src, processes=True)
    assert info.files == FILES
    assert repo.check(read_data=True).ok


_UNGUARDED = """
import sys
from pathlib import Path
from sctk.backup.repo import Repository

print("script ran", flush=True)
repo = Repository.open(sys.argv[1], sys.argv[3])
with repo.writer(processes=True) as w:
    n = w.add_tree(Path(sys.argv[2]), collect=False)
    print("workers", len(w._procs.procs._workers), "files", n, flush=True)
    w.commit("manual", {})
"""


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(repo, tmp_path):
    src = tmp_path / "src"
    _small_files(src, n=200)
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED)
    r = subprocess.run(
        [sys.executable, str(script), repo.url, str(src), PASSPHRASE],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("script ran") == 1, r.stdout
    assert re.search(r"^workers [1-9][0-9]* files 200$", r.stdout, re.M), r.stdout
    assert len(repo.snapshots()) == 1


@pytest.mark.parametrize("python", ["/nonexistent/python3", "/bin/false"])
def test_where_no_worker_can_start_threads_seal_the_batches(repo, tmp_path, monkeypatch, python):
    src = tmp_path / "src"
    _small_files(src)
    monkeypatch.setattr(sys, "executable", python)
    with repo.writer(processes=True) as w:
        w.add_tree(src)
        info = w.commit("manual", {})
        assert w._procs.procs is None
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)


def test_files_touched_but_unchanged_store_nothing_and_changed_ones_only_theirs(repo, tmp_path):
    """A worker seals every chunk of its batch; the writer keeps only those not stored."""
    src = tmp_path / "src"
    _small_files(src)
    first = backup(repo, src, processes=True)
    later = time.time() + 100
    for p in src.rglob("*.dat"):
        os.utime(p, (later, later))  # new mtimes: every file is read again
    touched = backup(repo, src, processes=True)
    assert touched.added_bytes == 0
    rnd = random.Random(9)
    changed = sorted(src.rglob("*.dat"))[::3]
    for p in changed:
        p.write_bytes(rnd.randbytes(3000))
    third = backup(repo, src, processes=True)
    assert 3000 * len(changed) <= third.added_bytes < 2 * 3000 * len(changed)
    assert repo.check(read_data=True).ok
    repo.restore(third.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)
    assert first.added_bytes > third.added_bytes


def test_a_repository_holding_its_packs_in_memory_takes_the_workers_chunks_too(tmp_path):
    """Remote storage: packs are held in memory until uploaded, and a worker's run of
    sealed chunks is a view of its answer's buffer (PackWriter.add_run)."""
    from sctk.backup.repo import Repository

    repo = Repository.init(f"memory://seal-processes-{os.getpid()}-{id(tmp_path)}", PASSPHRASE)
    assert repo.backend.packs_in_memory
    src = tmp_path / "src"
    _small_files(src, n=600)
    with repo.writer(processes=True) as w:
        w.add_tree(src)
        assert w._procs.procs is not None
        info = w.commit("manual", {})
    assert info.files == 600
    assert repo.check(read_data=True).ok
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(src)
