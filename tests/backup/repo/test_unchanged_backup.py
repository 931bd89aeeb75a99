"""A backup after its parent: the parent's stored file-list pieces are copied as they are
where none of their files changed (the same sealed bytes, nothing encoded or encrypted
again), the unchanged files' chunks are not looked up one by one while the index is the one
the parent left, and the list still reads back whole with the current reader."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sctk.backup.repo import Repository, filelist, repository
from sctk.backup.repo.formats import pack_name
from tests.backup.repo.conftest import PASSPHRASE, tree_bytes


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 3 entries, so a small tree makes many pieces."""
    monkeypatch.setattr(filelist, "PIECE_ENTRIES", 3)


def _many(root: Path, n: int) -> None:
    for i in range(n):
        p = root / f"d{i % 4}" / f"f{i:03d}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"file {i}\n" * (i % 7 + 1))


def _snap(repo: Repository, root: Path, collect: bool = False):
    """A backup of ROOT: (snapshot, files skipped, pieces copied from the parent)."""
    with repo.writer() as w:
        w.add_tree(root, collect=collect)
        info = w.commit("manual", {})
        assert w._sink is not None
        return info, w.skipped_files, w._sink.reused


def _pieces(repo: Repository, snap_id: str) -> list[bytes]:
    """The sealed pieces of a snapshot file, as stored."""
    header = repo.snapshot_header(snap_id)
    data = Path(repo.url, "snapshots", snap_id).read_bytes()
    return [data[off : off + length] for off, length, *_ in header["pieces"]]


def _entries(repo: Repository, snap_id: str) -> list[tuple]:
    return [(f.path, f.size, f.sha256, f.chunks) for f in repo.iter_files(snap_id)]


@pytest.mark.parametrize("collect", [False, True])
def test_an_unchanged_backup_copies_every_piece_of_the_parent(
    repo, tmp_path, small_pieces, collect
):
    root = tmp_path / "src"
    _many(root, 30)
    first, _, reused = _snap(repo, root)
    assert reused == 0  # no parent
    second, skipped, reused = _snap(repo, root, collect)
    parent = _pieces(repo, first.id)
    assert skipped == 30 and len(parent) == 10
    # sealed with a fresh random nonce each time: equal bytes were copied, not sealed again
    assert reused == 10 and _pieces(repo, second.id) == parent
    assert repo.snapshot_header(second.id)["list"] == repo.snapshot_header(first.id)["list"]
    assert second.id != first.id  # its own header (time, totals)
    assert _entries(repo, second.id) == _entries(repo, first.id)
    repo.restore(second.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(root)


def test_changed_new_and_removed_files_seal_only_their_pieces_again(repo, tmp_path, small_pieces):
    root = tmp_path / "src"
    _many(root, 40)
    first, _, _ = _snap(repo, root)
    parent = _pieces(repo, first.id)
    paths = [p for p, *_ in _entries(repo, first.id)]
    (root / paths[4]).write_text("changed\n")  # in the parent's second piece
    (root / paths[15]).unlink()  # the first entry of the sixth piece
    (root / (paths[30] + ".new")).write_text("new\n")  # in the eleventh piece, after [30]
    second, skipped, reused = _snap(repo, root)
    assert skipped == 38
    mine = _pieces(repo, second.id)
    assert len(mine) == len(parent)  # cut where the parent's pieces end
    same = [i for i, (a, b) in enumerate(zip(mine, parent, strict=True)) if a == b]
    assert same == [i for i in range(len(parent)) if i not in (1, 5, 10)]
    assert reused == len(same)
    assert [p for p, *_ in _entries(repo, second.id)] == sorted(
        [p for p in paths if p != paths[15]] + [paths[30] + ".new"]
    )
    repo.restore(second.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(root)
    # and the child's pieces are reused in turn by the next backup
    _, skipped, reused = _snap(repo, root)
    assert skipped == 40 and reused == len(parent)


def _count_lookups(repo: Repository) -> list[str]:
    """Chunk ids looked up in the index from now on (the index's own map, counted)."""
    seen: list[str] = []
    entries = repo.index.entries
    cls = entries.__class__

    class Counted(cls):
        def __contains__(self, cid):
            seen.append(cid)
            return cls.__contains__(self, cid)

        def get(self, cid, default=None):
            seen.append(cid)
            return cls.get(self, cid, default)

    entries.__class__ = Counted
    return seen


def test_unchanged_files_look_up_no_chunk_while_the_index_is_the_parents(repo, tmp_path):
    root = tmp_path / "src"
    _many(root, 12)
    (root / "big.bin").write_bytes(Path(__file__).read_bytes() * 50)
    first, _, _ = _snap(repo, root)
    assert repo.snapshot_header(first.id)["index_state"]
    seen = _count_lookups(repo)
    _, skipped, _ = _snap(repo, root)
    assert skipped == 13 and seen == []
    # a pack lost since: its chunks are looked up, and the files that used it read again
    big = next(f for f in repo.iter_files(first.id) if f.path == "big.bin")
    pack = repo.index.entries[big.chunks[0]][0]
    Path(repo.url, pack_name(pack)).unlink()
    reopened = Repository.open(repo.url, PASSPHRASE)
    seen = _count_lookups(reopened)
    third, skipped, _ = _snap(reopened, root)
    assert seen and skipped < 13
    # in this process too, the copy stored again is where the chunk is read from
    reopened.restore(third.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(root)


def test_a_repository_as_the_parent_left_it_is_backed_up_without_loading_the_index(repo, tmp_path):
    root = tmp_path / "src"
    _many(root, 12)
    first, _, _ = _snap(repo, root)
    header = repo.snapshot_header(first.id)
    assert header["index_state"] and header["pack_state"]
    quiet = Repository.open(repo.url, PASSPHRASE)
    second, skipped, _ = _snap(quiet, root)
    assert skipped == 12 and not quiet.index_loaded  # nothing needed it
    # a changed file loads it when its chunk is looked up; the snapshot reads back whole
    (root / "d1" / "f005.txt").write_text("changed\n")
    (root / "d2" / "new.txt").write_text("new\n")
    third, skipped, _ = _snap(quiet, root)
    assert skipped == 11 and quiet.index_loaded
    again = Repository.open(repo.url, PASSPHRASE)
    _, skipped, _ = _snap(again, root)
    assert skipped == 13 and not again.index_loaded  # the third's packs recorded too
    again.restore(third.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(root)
    # a pack that is not the parent's (an orphan, or one written since) means a full start
    orphan = Path(repo.url, "data", "ab", "ab" + "0" * 62)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"not a pack")
    last = Repository.open(repo.url, PASSPHRASE)
    _, skipped, _ = _snap(last, root)
    assert skipped == 13 and last.index_loaded and not orphan.exists()


def test_files_added_on_their_own_go_into_their_piece_and_the_rest_is_copied(
    repo, tmp_path, small_pieces
):
    """As `sctk backup create` does: the database dump and config first, then the trees in
    path order; the side files land in their pieces at the commit, the walk's pieces stay
    one run and are copied from the parent."""
    root = tmp_path / "src"
    _many(root / "archive", 10)
    _many(root / "results", 10)
    dump = tmp_path / "dump.sql"

    def snap(version: int):
        dump.write_text(f"dump {version}\n")
        with repo.writer() as w:
            w.add_file("postgres.sql", dump)  # between archive/ and results/
            w.add_file("sctk.toml", root / "archive" / "d0" / "f000.txt")  # after them all
            for top in ("archive", "results"):
                w.add_tree(root / top, prefix=f"{top}/", collect=False)
            info = w.commit("manual", {})
            return info, w._sink.reused

    first, _ = snap(1)
    paths = [p for p, *_ in _entries(repo, first.id)]
    assert paths == sorted(paths) and {"postgres.sql", "sctk.toml"} <= set(paths)
    second, reused = snap(2)
    mine, parent = _pieces(repo, second.id), _pieces(repo, first.id)
    assert len(mine) == len(parent)
    changed = [i for i, (a, b) in enumerate(zip(mine, parent, strict=True)) if a != b]
    # the dump's piece (its entry changed), and the pieces the side files were put into
    assert 1 <= len(changed) <= 2 and reused >= len(parent) - 2
    assert b"".join(repo.read_file(second.id, "postgres.sql")) == b"dump 2\n"
    repo.restore(second.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out" / "results") == tree_bytes(root / "results")


# -- pieces cut by the chunk ids they hold -----------------------------------------------------


@pytest.fixture
def chunky(tmp_path, monkeypatch) -> Repository:
    """A repository of chunks of 1 KiB exactly (a file of N KiB has N chunks, whatever the
    repository's chunker seed) whose pieces hold up to 8 chunk ids (and up to 1,000 entries:
    only the chunk ids cut the small trees below)."""
    monkeypatch.setattr(repository, "CHUNKER", {"min": 1024, "avg": 1024, "max": 1024})
    monkeypatch.setattr(filelist, "PIECE_CHUNKS", 8)
    return Repository.init(str(tmp_path / "chunky"), PASSPHRASE)


def _chunky(root: Path, n: int, seed: int = 0) -> None:
    """N files of 0 to 5 chunks each, and one of 20 chunks (more than twice a piece's)."""
    rnd = random.Random(seed)
    for i in range(n):
        p = root / f"d{i % 3}" / f"f{i:03d}.bin"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rnd.randbytes(1024 * rnd.randrange(0, 6)))
    (root / "d1" / "f010.big").write_bytes(rnd.randbytes(20 * 1024))


def _piece_docs(repo: Repository, snap_id: str) -> list[list[dict]]:
    header = repo.snapshot_header(snap_id)
    name = f"snapshots/{snap_id}"
    return [
        filelist.read_piece(repo.backend, repo.keys, name, header, i)
        for i in range(len(header["pieces"]))
    ]


def _ids_per_piece(repo: Repository, snap_id: str, slack: int = 1) -> list[int]:
    """The chunk ids of each piece, checked within SLACK times the limit, or one entry
    alone; with the slack of a piece following the parent, the parent's entry that takes it
    past the limit ends it (one entry more)."""
    limit = slack * filelist.PIECE_CHUNKS
    ids = []
    for docs in _piece_docs(repo, snap_id):
        n = sum(len(d["chunks"]) for d in docs)
        before_last = n - len(docs[-1]["chunks"])
        assert n <= limit or len(docs) == 1 or (slack == 2 and before_last < limit), [
            d["path"] for d in docs
        ]
        ids.append(n)
    return ids


def test_pieces_are_cut_by_their_chunk_ids_and_a_large_entry_is_a_piece_alone(chunky, tmp_path):
    root = tmp_path / "src"
    _chunky(root, 40)
    info, _, _ = _snap(chunky, root)
    ids = _ids_per_piece(chunky, info.id)
    assert len(ids) >= sum(ids) // filelist.PIECE_CHUNKS >= 10  # not one piece of 41 entries
    alone = [docs for docs in _piece_docs(chunky, info.id) if docs[0]["path"] == "d1/f010.big"]
    assert len(alone) == 1 and len(alone[0]) == 1 and len(alone[0][0]["chunks"]) == 20
    assert chunky.check(read_data=True).ok
    chunky.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(root)


def test_pieces_cut_by_chunk_ids_are_copied_by_an_unchanged_backup_and_a_changed_one(
    chunky, tmp_path
):
    root = tmp_path / "src"
    _chunky(root, 40)
    first, _, _ = _snap(chunky, root)
    parent = _pieces(chunky, first.id)
    assert len(parent) >= 10
    second, skipped, reused = _snap(chunky, root)
    assert skipped == 41 and reused == len(parent) and _pieces(chunky, second.id) == parent
    # a piece's first file grown by 7 chunks, and a new file of 7 chunks within another
    # piece: past the limit, but a piece following the parent takes them (up to twice the
    # limit) rather than moving the later pieces
    firsts = [
        docs[0]["path"]
        for docs in _piece_docs(chunky, first.id)
        if len(docs) > 1 and sum(len(d["chunks"]) for d in docs) >= 2
    ]
    grown = next(f for f in chunky.iter_files(first.id) if f.path == firsts[0])
    (root / grown.path).write_bytes(random.Random(5).randbytes(1024 * (len(grown.chunks) + 7)))
    (root / (firsts[1] + ".new")).write_bytes(random.Random(6).randbytes(7 * 1024))
    third, skipped, reused = _snap(chunky, root)
    assert skipped == 40
    _ids_per_piece(chunky, third.id, slack=2)
    mine = _pieces(chunky, third.id)
    assert len(mine) == len(parent)
    assert reused == sum(a == b for a, b in zip(mine, parent, strict=True)) == len(parent) - 2
    chunky.restore(third.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(root)
    _, skipped, reused = _snap(chunky, root)
    assert skipped == 42 and reused == len(mine)
    # new files of 25 chunks in all within one piece: cut before the one that would take it
    # past twice the limit; and one that takes another piece to 15 after its first entry:
    # cut after the parent's next entry (the piece's rest is a piece of its own)
    for i in range(5):
        (root / f"{firsts[2]}.n{i}").write_bytes(random.Random(i).randbytes(5 * 1024))
    docs = next(
        d
        for d in _piece_docs(chunky, third.id)
        if len(d) > 2 and d[1]["chunks"] and sum(len(e["chunks"]) for e in d[1:]) > 1
    )
    more = 2 * filelist.PIECE_CHUNKS - 1 - len(docs[0]["chunks"])
    (root / f"{docs[0]['path']}.more").write_bytes(random.Random(9).randbytes(1024 * more))
    fifth, skipped, reused = _snap(chunky, root)
    assert skipped == 42 and 0 < reused < len(mine)
    _ids_per_piece(chunky, fifth.id, slack=2)
    _, skipped, reused = _snap(chunky, root)
    assert skipped == 48 and reused == len(_pieces(chunky, fifth.id))


def test_side_files_and_merged_runs_keep_pieces_within_their_chunk_ids(
    chunky, tmp_path, monkeypatch
):
    root = tmp_path / "src"
    _chunky(root, 30)
    big = tmp_path / "dump.sql"
    big.write_bytes(random.Random(7).randbytes(30 * 1024))  # 30 chunks: a piece alone

    def snap():
        with chunky.writer() as w:
            w.add_file("d1/f005.dump", big)  # spliced into the walk's pieces at the commit
            w.add_file("d2/f001.conf", root / "d0" / "f000.bin")
            w.add_tree(root, collect=False)
            info = w.commit("side", {})
            return info, w._sink.reused

    first, _ = snap()
    _ids_per_piece(chunky, first.id, slack=2)  # a piece takes side files up to the slack
    alone = [d for d in _piece_docs(chunky, first.id) if d[0]["path"] == "d1/f005.dump"]
    assert len(alone) == 1 and len(alone[0]) == 1
    # again with the first as the parent: the dump's piece is cut out again (the pieces
    # after it sealed again for their places), and everything reads back
    second, reused = snap()
    _ids_per_piece(chunky, second.id, slack=2)
    assert reused > 0
    assert b"".join(chunky.read_file(second.id, "d1/f005.dump")) == big.read_bytes()
    chunky.restore(second.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out" / "d0") == tree_bytes(root / "d0")
    # trees out of path order (two runs merged at the commit), and more side files than a
    # piece's entries (pieces of their own, merged too)
    monkeypatch.setattr(filelist, "PIECE_ENTRIES", 4)
    with chunky.writer() as w:
        for i in range(6):
            w.add_file(f"c/side{i}.bin", root / "d2" / f"f{3 * i + 2:03d}.bin")
        w.add_tree(root / "d2", prefix="b/")
        w.add_tree(root / "d1", prefix="a/")
        merged = w.commit("runs", {})
    _ids_per_piece(chunky, merged.id)
    paths = [f.path for f in chunky.iter_files(merged.id)]
    assert paths == sorted(paths) and len(paths) == 6 + 10 + 11
    # files added on their own only (no walk to splice them into): their own pieces
    with chunky.writer() as w:
        for i in range(3):
            w.add_file(f"only/{i}.bin", big)
        alone = w.commit("side only", {})
    assert _ids_per_piece(chunky, alone.id) == [30, 30, 30]
    assert chunky.check(read_data=True).ok
