"""Model kinds are chosen once, through their registry (sctk.uq.model_kind): no module tests a
model's kind by its name, and a plugin's kind is used like a built-in one."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sctk.errors import SctkError
from sctk.registry import DuplicateEntry
from sctk.uq.model_kind import MODEL_KINDS, kind_for, kind_named, model_kind

SRC = Path(__file__).resolve().parents[2] / "src" / "sctk"
# where a kind's name may be spelt: the kinds themselves
ALLOWED = {"uq/tabular_kind.py", "uq/field_kind.py"}
NAMES = {"tabular", "field"}


def _kind_tests(path: Path) -> list[int]:
    """Lines of PATH that compare something called `kind` with a model kind's name."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Compare):
            continue
        sides = [node.left, *node.comparators]
        named_kind = any(
            (isinstance(s, ast.Attribute) and s.attr == "kind")
            or (isinstance(s, ast.Name) and s.id == "kind")
            for s in sides
        )
        spelt = any(isinstance(s, ast.Constant) and s.value in NAMES for s in sides)
        if named_kind and spelt:
            lines.append(node.lineno)
    return lines


def test_no_module_branches_on_a_model_kinds_name():
    found = {
        f"{path.relative_to(SRC)}:{line}"
        for path in SRC.rglob("*.py")
        if str(path.relative_to(SRC)) not in ALLOWED
        for line in _kind_tests(path)
    }
    assert not found, f"choose the model kind through sctk.uq.model_kind, not by name: {found}"


def test_the_scan_finds_a_planted_kind_test(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text('def f(row):\n    return 1 if row.kind == "field" else 2\n')
    assert _kind_tests(planted) == [2]


def test_the_built_in_kinds_are_declared_and_found_by_model_and_by_name():
    from sctk.uq.field_hybrid import FieldHybridRegressor
    from sctk.uq.hybrid import HybridRegressor

    assert {"tabular", "field"} <= set(MODEL_KINDS)
    assert kind_for(HybridRegressor()).name == "tabular"
    assert kind_for(FieldHybridRegressor()).name == "field"
    assert MODEL_KINDS.origin("field") == "sctk.uq.field_kind"
    with pytest.raises(
        SctkError, match="There is no model kind 'graph'; the kinds are field, tabular"
    ):
        kind_named("graph")
    with pytest.raises(SctkError, match="ndarray is of no model kind sctk knows"):
        kind_for(np.zeros(3))


def test_a_second_declaration_of_a_kinds_name_is_refused():
    class Impostor:
        name = "tabular"

    with pytest.raises(DuplicateEntry, match="model kind 'tabular' is declared twice"):
        model_kind(Impostor())
    assert type(MODEL_KINDS["tabular"]).__name__ == "TabularKind"


@pytest.mark.parametrize("kind", ["tabular", "field"])
def test_a_model_that_cannot_be_saved_is_one_sentence_for_every_kind(kind):
    from sctk.uq.field_hybrid import FieldHybridRegressor
    from sctk.uq.hybrid import HybridRegressor

    cls = HybridRegressor if kind == "tabular" else FieldHybridRegressor
    with pytest.raises(SctkError, match="Only a fitted model can be saved"):
        MODEL_KINDS[kind].state(cls())
    fitted_looking = cls(physics=lambda X: X)
    fitted_looking.calibrator_ = object()  # past the fitted check, to the physics one
    with pytest.raises(SctkError, match="physics is a Python object cannot be saved"):
        MODEL_KINDS[kind].state(fitted_looking)
