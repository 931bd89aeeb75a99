"""Snapshot files of format version 2 (file list in pieces, header at the end), version-1
repositories read and written as older sctk does, the upgrade between them (killed with
SIGKILL at each of its steps: consistent, and the rerun finishes), and the progress of every
prune and check phase."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from sctk.backup.repo import PrunePolicy, Repository, filelist
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.formats import AAD_SNAPSHOT, open_json
from tests.backup.repo.conftest import PASSPHRASE, backup, make_tree, tree_bytes
from tests.backup.repo.crash_support import killed_at


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 3 entries, so small trees make many pieces and several sorted runs."""
    monkeypatch.setattr(filelist, "PIECE_ENTRIES", 3)


def _many(root: Path, n: int, tag: str = "") -> None:
    for i in range(n):
        p = root / f"d{i % 4}" / f"f{i:03d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"file {i} {tag}\n" * (i % 7 + 1))


def _old_reader_doc(repo: Repository, snap_id: str) -> dict:
    """What sctk before format 2 does with a snapshot file: open it whole as one document."""
    blob = Path(repo.url, "snapshots", snap_id).read_bytes()
    return open_json(repo.keys, blob, AAD_SNAPSHOT, "snapshot file")


def test_file_list_in_pieces_is_sorted_and_listing_reads_headers(repo, tmp_path, small_pieces):
    root = tmp_path / "src"
    _many(root, 40)
    with repo.writer() as w:
        # out of path order, with files added one by one between trees: several sorted runs
        w.add_file("zz/last.txt", root / "d0" / "f000.txt")
        w.add_tree(root / "d2", prefix="b/")
        w.add_file("a/first.txt", root / "d1" / "f001.txt")
        w.add_tree(root, prefix="c/")
        info = w.commit("pieces", {"k": 1})
    header = repo.snapshot_header(info.id)
    assert header["format"] == 2 and header["files"] == 2 + 10 + 40 == info.files
    # the walks' 50 entries 3 a piece; the 2 files added on their own put into their pieces
    assert len(header["pieces"]) == 17
    paths = [f["path"] for f in repo.snapshot_files(info.id)]
    assert paths == sorted(paths) and len(set(paths)) == 52
    bounds = [(p[2], p[3]) for p in header["pieces"]]
    assert all(a[1] < b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    # a listing in a new process reads each file's tail, never a piece
    again = Repository.open(repo.url, PASSPHRASE)
    read = []
    real = again.backend.read_range
    again.backend.read_range = lambda n, o, k: read.append((n, o, k)) or real(n, o, k)
    listed = again.snapshots()
    assert [(s.id, s.files, s.label, s.manifest) for s in listed] == [
        (info.id, 52, "pieces", {"k": 1})
    ]
    size = os.path.getsize(Path(repo.url, "snapshots", info.id))
    assert read == [(f"snapshots/{info.id}", max(0, size - filelist.TAIL_READ), min(size, 65536))]
    # one file found by bisecting the pieces' bounds, restored whole
    assert (
        b"".join(again.read_file(info.id, "c/d3/f007.txt"))
        == (root / "d3" / "f007.txt").read_bytes()
    )
    again.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out" / "c") == tree_bytes(root)
    assert again.check(read_data=True).ok


def test_a_path_added_twice_across_trees_is_refused_at_commit(repo, tmp_path, small_pieces):
    root = tmp_path / "src"
    _many(root, 12)
    with repo.writer() as w:
        w.add_tree(root, prefix="x/")
        w.add_file("x/d1/f005.txt", root / "d1" / "f005.txt")
        with pytest.raises(RepoError, match="x/d1/f005.txt was added twice"):
            w.commit("dup", {})
    assert repo.snapshots() == []
    assert not [n for n in os.listdir(Path(repo.url, "snapshots"))]  # no partial file left


def test_second_backup_merges_the_parent_piece_by_piece(repo, tmp_path, small_pieces):
    root = tmp_path / "src"
    _many(root, 30)
    first = backup(repo, root)
    (root / "d1" / "f005.txt").write_text("changed\n")
    (root / "d0" / "f000.txt").unlink()
    (root / "d3" / "new.txt").write_text("new\n")
    loads = []
    real = repo.snapshot_lookup

    def counted(snap_id):
        lookup = real(snap_id)
        load = lookup.load
        lookup.load = lambda i: loads.append(i) or load(i)
        return lookup

    repo.snapshot_lookup = counted
    with repo.writer() as w:
        w.add_tree(root)
        second = w.commit("second", {})
        skipped = w.skipped_files
    assert skipped == 28 and second.files == 30
    assert loads == sorted(set(loads))  # each piece of the parent read once, in order
    assert len(loads) == len(repo.snapshot_header(first.id)["pieces"])
    repo.restore(second.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(root)


@pytest.fixture
def old_repo(tmp_path):
    """A version-1 repository written by the version-1 code path: three snapshots (the last
    a second backup skipping unchanged files), the newest verified."""
    repo = Repository.init(str(tmp_path / "old"), PASSPHRASE, version=1)
    root = tmp_path / "src"
    make_tree(root)
    _many(root / "many", 25)
    trees = []
    for i in range(3):
        (root / "changing.txt").write_text(f"version {i}\n" * 100)
        backup(repo, root, label=f"s{i}")
        trees.append(tree_bytes(root))
    snaps = repo.snapshots()
    repo.mark_verified(snaps[-1].id, {"ok": True, "n": 1})
    return repo, trees


def test_a_version_1_repository_is_read_written_and_pruned_as_before(old_repo, tmp_path):
    repo, trees = old_repo
    assert repo.version == 1
    snaps = repo.snapshots()
    for s, tree in zip(snaps, trees, strict=True):
        doc = _old_reader_doc(repo, s.id)  # still what an older sctk reads
        assert len(doc["files"]) == s.files == len(tree)
        repo.restore(s.id, tmp_path / s.label)
        assert tree_bytes(tmp_path / s.label) == tree
    report = repo.prune(PrunePolicy(keep_last=2))
    assert len(report.removed_snapshots) == 1 and repo.check(read_data=True).ok
    assert all(_old_reader_doc(repo, s.id)["files"] for s in repo.snapshots())


def test_upgrade_rewrites_the_snapshots_and_keeps_what_they_hold(old_repo, tmp_path):
    repo, trees = old_repo
    before = repo.snapshots()
    verified_at = repo.verified()[before[-1].id]
    report = repo.upgrade()
    assert (report.from_version, report.to_version) == (1, 2)
    assert set(report.converted) == {s.id for s in before}
    again = Repository.open(repo.url, PASSPHRASE)
    assert again.version == 2
    after = again.snapshots()
    assert [(s.time, s.label, s.files, s.size, s.added_bytes) for s in after] == [
        (s.time, s.label, s.files, s.size, s.added_bytes) for s in before
    ]
    assert [s.id for s in after] == [report.converted[s.id] for s in before]
    assert again.verified() == {after[-1].id: verified_at}  # the marker moved with it
    for s, tree in zip(after, trees, strict=True):
        assert again.snapshot_header(s.id)["format"] == 2
        again.restore(s.id, tmp_path / f"up-{s.label}")
        assert tree_bytes(tmp_path / f"up-{s.label}") == tree
    assert again.check(read_data=True).ok
    # an older sctk refuses it in one sentence (its check of the config's version)
    with (
        pytest.raises(RepoError, match="has format version 2"),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setattr("sctk.backup.repo.repository.VERSIONS", (1,))
        Repository.open(repo.url, PASSPHRASE)
    # a second backup on the upgraded repository skips against the converted parent
    root = tmp_path / "src"
    with again.writer() as w:
        w.add_tree(root)
        w.commit("after", {})
        assert w.skipped_files == len(trees[-1])
    assert again.upgrade().converted == {}


UPGRADE = textwrap.dedent(
    """
    import sys
    from sctk.backup.repo import Repository
    Repository.open(sys.argv[1], sys.argv[2]).upgrade()
    """
)
STEPS = [
    "backup.upgrade.config",
    "backup.upgrade.converted",
    "backup.upgrade.marker-written",
    "backup.upgrade.old-deleted",
]


@pytest.mark.parametrize("step", STEPS)
def test_an_upgrade_killed_at_each_step_is_consistent_and_the_rerun_finishes(
    old_repo, tmp_path, step
):
    repo, trees = old_repo
    killed_at(step, UPGRADE, repo.url, PASSPHRASE)
    mid = Repository.open(repo.url, PASSPHRASE)
    snaps = mid.snapshots()
    assert [s.label for s in snaps] == ["s0", "s1", "s2"]  # no snapshot twice, none lost
    assert len(mid.verified()) >= 1 and mid.check(read_data=True).ok
    mid.restore(snaps[-1].id, tmp_path / "mid")
    assert tree_bytes(tmp_path / "mid") == trees[-1]

    mid.upgrade()
    done = Repository.open(repo.url, PASSPHRASE)
    snaps = done.snapshots()
    assert len(os.listdir(Path(repo.url, "snapshots"))) == 3
    assert [done.snapshot_header(s.id)["format"] for s in snaps] == [2, 2, 2]
    assert list(done.verified()) == [snaps[-1].id]
    for s, tree in zip(snaps, trees, strict=True):
        done.restore(s.id, tmp_path / f"done-{s.label}")
        assert tree_bytes(tmp_path / f"done-{s.label}") == tree
    assert done.check(read_data=True).ok


def test_every_prune_and_check_phase_reports(repo, tmp_path):
    root = tmp_path / "src"
    make_tree(root)
    for i in range(3):
        (root / "changing.bin").write_bytes(os.urandom(4_000_000))  # most of a pack
        backup(repo, root, label=f"s{i}")
    heard: list[tuple[str, int, int | None]] = []
    repo.check(read_data=True, phase=lambda *a: heard.append(a))
    names = list(dict.fromkeys(n for n, _, _ in heard))
    assert names == ["index", "snapshots", "reading", "leftovers"]
    files = sum(s.files for s in repo.snapshots())
    assert ("snapshots", files, files) in heard
    assert max(d for n, d, _ in heard if n == "reading") > 1_800_000

    heard.clear()
    repo.prune(PrunePolicy(keep_last=1), phase=lambda *a: heard.append(a))
    names = list(dict.fromkeys(n for n, _, _ in heard))
    assert names == [
        "checking",
        "marking",
        "planning",
        "forgetting",
        "repacking",
        "indexing",
        "deleting",
    ]
    for name in ("checking", "marking", "planning", "forgetting", "deleting"):
        last = [(d, t) for n, d, t in heard if n == name][-1]
        assert last[0] == last[1], (name, last)  # each phase ends with its whole count
