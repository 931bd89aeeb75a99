"""A prune killed with SIGKILL at each of its steps (driven from the step itself, see
sctk.crashpoints): the repository stays consistent and restorable, and the rerun finishes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sctk.backup.repo import PrunePolicy, Repository
from tests.backup.repo.conftest import PASSPHRASE, backup, tree_bytes
from tests.backup.repo.crash_support import killed_at

STEPS = [
    "backup.prune.forgotten",
    "backup.prune.repacked",
    "backup.prune.indexed",
    "backup.prune.old-index-deleted",
    "backup.prune.deleting",
]
PRUNE = textwrap.dedent(
    """
    import sys
    from sctk.backup.repo import PrunePolicy, Repository
    repo = Repository.open(sys.argv[1], sys.argv[2])
    repo.prune(PrunePolicy(keep_last=2))
    """
)


@pytest.fixture
def history(repo, tmp_path):
    """Five snapshots: a file kept throughout, a large one rewritten each time (so old packs
    become garbage and mixed packs are repacked); the last two trees, to compare."""
    root = tmp_path / "src"
    root.mkdir()
    (root / "kept.bin").write_bytes(os.urandom(700_000))
    trees = []
    for i in range(5):
        (root / "changing.bin").write_bytes(os.urandom(1_500_000))
        (root / f"small{i}.txt").write_text(f"version {i}\n" * 50)
        backup(repo, root, label=f"s{i}")
        trees.append(tree_bytes(root))
    return trees[-2:]


def _restored(repo: Repository, snap_id: str, target: Path) -> dict:
    repo.restore(snap_id, target)
    return tree_bytes(target)


@pytest.mark.parametrize("step", STEPS)
def test_a_prune_killed_at_each_step_leaves_a_sound_repository_and_the_rerun_finishes(
    repo, history, tmp_path, step
):
    killed_at(step, PRUNE, repo.url, PASSPHRASE)

    # consistent: every snapshot still listed reads back whole
    mid = Repository.open(repo.url, PASSPHRASE)
    report = mid.check(read_data=True)
    assert report.ok, report.errors
    snaps = mid.snapshots()
    assert len(snaps) in (2, 5)
    got = [_restored(mid, s.id, tmp_path / f"mid-{i}") for i, s in enumerate(snaps[-2:])]
    assert got == history

    # the rerun finishes: two snapshots, nothing unreferenced left behind
    after = Repository.open(repo.url, PASSPHRASE)
    after.prune(PrunePolicy(keep_last=2))
    final = after.check(read_data=True)
    assert final.ok, final.errors
    assert final.unreferenced_bytes == 0 and final.leftover_files == 0
    snaps = after.snapshots()
    assert [s.label for s in snaps] == ["s3", "s4"]
    got = [_restored(after, s.id, tmp_path / f"after-{i}") for i, s in enumerate(snaps)]
    assert got == history
