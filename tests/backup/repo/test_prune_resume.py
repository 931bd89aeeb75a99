"""A prune killed (kill -9) in any phase leaves a repository that verifies, and running it
again finishes the work; progress is reported for every phase."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sctk.backup.repo import PrunePolicy, Repository

from .conftest import PASSPHRASE, backup, tree_bytes


def _history(tmp_path: Path) -> tuple[Repository, Path]:
    """Four snapshots: the first two each hold a large file nothing later keeps (so their
    packs become garbage or mostly garbage once forgotten) next to a shared small one."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared.dat").write_bytes(os.urandom(20_000))
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE, cache_dir=tmp_path / "cache")
    for i in range(4):
        for old in src.glob("big-*"):
            old.unlink()
        (src / f"big-{i}.bin").write_bytes(os.urandom(700_000))
        (src / f"small-{i}.dat").write_bytes(os.urandom(30_000))
        backup(repo, src, f"run{i}")
    return repo, src


def test_prune_reports_progress_for_every_phase(tmp_path):
    repo, src = _history(tmp_path)
    seen: dict[str, tuple[int, int]] = {}
    report = repo.prune(PrunePolicy(keep_last=2), progress=lambda p, d, t: seen.update({p: (d, t)}))
    assert len(report.removed_snapshots) == 2 and report.deleted_packs + report.repacked_packs
    assert set(seen) == {"snapshots", "packs", "repack", "index", "delete"}, seen
    assert all(done == total > 0 for done, total in seen.values()), seen
    after = repo.check(read_data=True)
    assert after.ok and after.unreferenced_bytes == 0
    out = tmp_path / "out"
    repo.restore("latest", out)
    assert tree_bytes(out) == tree_bytes(src)


@pytest.mark.parametrize("phase", ["repack", "delete"])
def test_prune_killed_midway_is_consistent_and_the_rerun_finishes(tmp_path, phase):
    repo, src = _history(tmp_path)
    kept = [s.id for s in repo.snapshots()[-2:]]
    script = textwrap.dedent(
        f"""
        import os, signal
        from sctk.backup.repo import PrunePolicy, Repository
        repo = Repository.open({repo.url!r}, {PASSPHRASE!r}, cache_dir={str(tmp_path / "cache")!r})
        def progress(phase, done, total):
            if phase == {phase!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        repo.prune(PrunePolicy(keep_last=2), progress=progress)
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]
    # killed: the kept snapshots are whole and verify, garbage may be left over
    again = Repository.open(repo.url, PASSPHRASE, cache_dir=tmp_path / "cache")
    assert [s.id for s in again.snapshots()] == kept
    mid = again.check(read_data=True)
    assert mid.ok, mid.errors
    # the rerun finishes: nothing unreferenced is left, and the newest snapshot restores
    again.prune(PrunePolicy(keep_last=2))
    done = again.check(read_data=True)
    assert done.ok and done.unreferenced_bytes == 0 and done.leftover_files == 0
    out = tmp_path / "out"
    again.restore(kept[-1], out)
    assert tree_bytes(out) == tree_bytes(src)
