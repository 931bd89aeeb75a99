"""check(read_data=True) over snapshots that share pieces of their file lists (an unchanged
backup copies its parent's pieces as stored): a repeated piece is decoded and merged once,
in the first snapshot that holds it, and a snapshot whose list fails part way leaves no
piece for a later one to skip. Also the filter of contents found at several places, which
spares a lookup per file for the others, and the leftovers' bytes summed from the sorted
files."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from sctk.backup.repo import Repository, filelist, leftovers
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.keyfilter import KeyFilter
from tests.backup.repo.conftest import PASSPHRASE, backup, damage_chunk


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 3 entries, so a small tree makes many pieces."""
    monkeypatch.setattr(filelist, "PIECE_ENTRIES", 3)


def _tree(root: Path, n: int = 30) -> None:
    for i in range(n):
        p = root / f"d{i % 3}" / f"f{i:03d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"file {i}\n" * (i % 7 + 1))


def _pack_bytes(repo) -> int:
    return sum(repo.index.pack_sizes.values())


def test_an_unchanged_snapshot_is_read_once_and_damage_named_in_the_first(
    repo, tmp_path, small_pieces
):
    root = tmp_path / "src"
    _tree(root)
    first = backup(repo, root)
    second = backup(repo, root)
    assert repo.snapshot_header(second.id)["list"] == repo.snapshot_header(first.id)["list"]
    report = repo.check(read_data=True)
    assert report.ok, report.errors
    assert report.bytes_read == _pack_bytes(repo)

    entry = next(f for f in repo.files(first.id) if f.path == "d1/f001.txt")
    damage_chunk(repo, entry.chunks[0])
    errors = repo.check(read_data=True).errors
    named = [e for e in errors if "cannot be restored" in e]
    earlier = min(first.id, second.id)  # checked in the order of their ids
    assert len(named) == 1 and named[0].startswith(f"Snapshot {earlier[:12]}: file d1/f001.txt")


def _spoil_last_piece(repo: Repository, snap_id: str, below: str) -> str:
    """Overwrite the last piece of SNAP_ID's list with other bytes and store the file under
    its new SHA-256 (so it passes the name check and fails only at that piece), chosen
    below BELOW so it is checked first; the new id."""
    path = Path(repo.url, "snapshots", snap_id)
    data = bytearray(path.read_bytes())
    off, length = repo.snapshot_header(snap_id)["pieces"][-1][:2]
    rnd = random.Random(3)
    for _ in range(100_000):
        data[off : off + length] = rnd.randbytes(length)
        new_id = hashlib.sha256(data).hexdigest()
        if new_id < below:
            break
    else:
        raise AssertionError("no name below the other snapshot's found")
    path.unlink()
    Path(repo.url, "snapshots", new_id).write_bytes(bytes(data))
    return new_id


def test_a_list_failing_part_way_leaves_no_piece_for_a_later_snapshot_to_skip(
    tmp_path, small_pieces
):
    root = tmp_path / "src"
    _tree(root)
    repo = Repository.init(str(tmp_path / "repo"), PASSPHRASE)
    a = backup(repo, root)
    b = backup(repo, root)  # every piece the same as a's
    # the older (by id) snapshot spoilt at its last piece, still checked first
    spoilt_id, kept = (a.id, b.id) if a.id < b.id else (b.id, a.id)
    entry = next(f for f in repo.files(kept) if f.path == "d0/f000.txt")  # piece 0
    repo = Repository.open(str(tmp_path / "repo"), PASSPHRASE)
    spoilt = _spoil_last_piece(repo, spoilt_id, kept)
    damage_chunk(repo, entry.chunks[0])
    errors = repo.check(read_data=True).errors
    assert any(spoilt[:12] in e and "damaged" in e for e in errors), errors
    # the spoilt list's first pieces are not the first copy of the kept snapshot's: its
    # files are read there, and the damaged one named
    assert any(
        e.startswith(f"Snapshot {kept[:12]}: file d0/f000.txt cannot be restored") for e in errors
    ), errors


def test_the_filter_never_says_no_for_a_key_added_and_seldom_yes_for_others():
    rnd = random.Random(4)
    added = [hashlib.sha256(rnd.randbytes(8)).digest() for _ in range(25_000)]
    f = KeyFilter()
    for k in added:
        f.add(k)
    assert all(k in f for k in added)
    others = [hashlib.sha256(rnd.randbytes(9)).digest() for _ in range(20_000)]
    assert sum(k in f for k in others) < 0.005 * len(others)  # ~0.04% expected


def test_unreferenced_bytes_from_the_sorted_files_equal_a_lookup_per_chunk(repo, tmp_path):
    root = tmp_path / "src"
    _tree(root, 40)
    backup(repo, root)
    (root / "d0" / "f000.txt").write_bytes(random.Random(5).randbytes(200_000))
    for p in list((root / "d1").iterdir())[:5]:
        p.unlink()
    second = backup(repo, root)
    repo.forget([second.id])  # its new chunks unreferenced now
    index = repo.index
    ref = index.chunk_set(
        c for sid in repo.snapshot_ids() for f in repo.snapshot_files(sid) for c in f["chunks"]
    )
    as_set = {
        c for sid in repo.snapshot_ids() for f in repo.snapshot_files(sid) for c in f["chunks"]
    }
    fast = leftovers.unreferenced_index_bytes(index, ref)  # one pass over both files
    slow = leftovers.unreferenced_index_bytes(index, as_set)  # a lookup per chunk
    assert fast == slow > 200_000


def test_a_piece_of_a_removed_snapshot_is_one_sentence(repo, tmp_path, small_pieces):
    root = tmp_path / "src"
    _tree(root)
    snap = backup(repo, root)
    header = repo.snapshot_header(snap.id)
    assert repo.snapshot_piece_blob(snap.id, header, 0)  # sealed bytes while it is there
    (Path(repo.url.removeprefix("file://")) / "snapshots" / snap.id).unlink()
    with pytest.raises(RepoError, match=rf"^Snapshot {snap.id[:12]} was removed from .*\.$"):
        repo.snapshot_piece_blob(snap.id, header, 1)
