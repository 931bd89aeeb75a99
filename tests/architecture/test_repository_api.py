"""The backup engine's checker, pruner, restorer, writer and the rest use the repository
through its public methods only: a private member of `Repository` read from another module
fails here, so the repository can change its insides without breaking them."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "sctk" / "backup"
OWNER = SRC / "repo" / "repository.py"


def _private_uses(source: str) -> list[tuple[int, str]]:
    """(line, member) for each `repo._x` or `self.repo._x` in SOURCE (dunders aside)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__"):
            continue
        owner = node.value
        if (isinstance(owner, ast.Name) and owner.id == "repo") or (
            isinstance(owner, ast.Attribute) and owner.attr == "repo"
        ):
            found.append((node.lineno, node.attr))
    return found


def test_no_module_reaches_into_the_repository():
    offenders = {
        str(path.relative_to(SRC)): uses
        for path in sorted(SRC.rglob("*.py"))
        if path != OWNER and (uses := _private_uses(path.read_text(encoding="utf-8")))
    }
    assert not offenders, f"private Repository members used outside repository.py: {offenders}"


def test_the_check_sees_a_planted_private_use():
    planted = "def f(repo, self):\n    repo._index.get(1)\n    self.repo._locks.release()\n"
    assert _private_uses(planted) == [(2, "_index"), (3, "_locks")]
