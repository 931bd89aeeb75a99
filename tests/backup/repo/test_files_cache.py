"""The files cache: a backup after an unchanged parent reads no file's content, a touched
file is read again, and the snapshot restores whole."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.backup.repo.conftest import backup, make_tree, tree_bytes

# Every open() and os.open() raises the "open" audit event with the path, os.scandir() the
# "os.scandir" event: recorded while a test lists them (hooks cannot be removed, so one hook
# serves every test). The directories listed show that the hook sees the walk.
_OPENED: list[str] | None = None


def _hook(event: str, args: tuple) -> None:
    if (
        _OPENED is not None
        and event in ("open", "os.scandir")
        and isinstance(args[0], str | bytes | Path)
    ):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_hook)


def opened_under(root: Path, fn) -> list[str]:
    """Paths under ROOT that FN opened (files and directories)."""
    global _OPENED
    _OPENED = []
    try:
        fn()
        seen = list(_OPENED)
    finally:
        _OPENED = None
    prefix = str(root) + os.sep
    return sorted(p.removeprefix(prefix) for p in seen if p.startswith(prefix))


def odd_tree(root: Path) -> None:
    """Names whose sorted order differs from a plain walk's ('a-b' < 'a/x' < 'a0')."""
    for rel in ("a-b", "a/x", "a/y/z", "a0", "a.txt", "b/a-b", "b/a/c", "B", "é/ü"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rel.encode() * 300)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    make_tree(root)
    odd_tree(root)
    return root


def test_unchanged_backup_opens_no_file(repo, tree, tmp_path):
    first = backup(repo, tree)
    n = len(repo.files(first.id))

    def second():
        with repo.writer() as w:
            w.add_tree(tree)
            assert w.skipped_files == n
            return w.commit("manual", {})

    # the walk opens directories (scandir); the content of no file is opened
    opened = opened_under(tree, second)
    files = {p.removeprefix(str(tree) + os.sep) for p in map(str, tree.rglob("*"))}
    regular = {p for p in files if (tree / p).is_file()}
    assert opened and not set(opened) & regular

    info = repo.find_snapshot("latest")
    assert info.id != first.id
    # the unchanged entries are the parent's, stat key included
    before = {f.path: (f.size, f.sha256, f.chunks) for f in repo.files(first.id)}
    after = {f.path: (f.size, f.sha256, f.chunks) for f in repo.files(info.id)}
    assert after == before
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)


def test_touched_file_is_read_again(repo, tree, tmp_path):
    backup(repo, tree)
    path = tree / "a/y/z"
    path.write_bytes(b"new content, same tree")
    grown = tree / "a-b"
    with grown.open("ab") as f:
        f.write(b"appended")
    holder = {}

    def second():
        with repo.writer() as w:
            w.add_tree(tree)
            holder["skipped"] = w.skipped_files
            holder["info"] = w.commit("manual", {})

    opened = opened_under(tree, second)
    assert [p for p in opened if (tree / p).is_file()] == ["a-b", "a/y/z"]
    info = holder["info"]
    assert holder["skipped"] == len(repo.files(info.id)) - 2
    assert b"".join(repo.read_file(info.id, "a/y/z")) == b"new content, same tree"
    # a third backup skips them again (their new stat was recorded)
    assert opened_under(tree, lambda: backup(repo, tree)) == sorted(
        p for p in opened if (tree / p).is_dir()
    )
    repo.restore(repo.find_snapshot("latest").id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)


def test_new_removed_and_replaced_files(repo, tree, tmp_path):
    backup(repo, tree)
    (tree / "a0").unlink()
    (tree / "a/new").write_bytes(b"new")
    # same size and mtime, another inode: read again
    old = tree / "b/a-b"
    st = old.stat()
    data = old.read_bytes()
    old.unlink()
    old.write_bytes(data[::-1])
    os.utime(old, ns=(st.st_atime_ns, st.st_mtime_ns))
    with repo.writer() as w:
        w.add_tree(tree)
        info = w.commit("manual", {})
    paths = {f.path for f in repo.files(info.id)}
    assert "a0" not in paths and "a/new" in paths
    assert b"".join(repo.read_file(info.id, "b/a-b")) == data[::-1]
    repo.restore(info.id, tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(tree)


def test_prefixed_trees_skip_against_the_parent(repo, tree, tmp_path):
    other = tmp_path / "other"
    make_tree(other, seed=2)

    def both():
        with repo.writer() as w:
            w.add_tree(tree, prefix="one/")
            w.add_tree(other, prefix="two/")
            w.add_file("top.bin", tree / "random.bin")
            skipped = w.skipped_files
            return w.commit("manual", {}), skipped

    first, skipped = both()
    assert skipped == 0
    second, skipped = both()
    assert skipped == len(repo.files(second.id))
    out = tmp_path / "out"
    repo.restore(second.id, out)
    assert tree_bytes(out / "one") == tree_bytes(tree)
    assert tree_bytes(out / "two") == tree_bytes(other)
