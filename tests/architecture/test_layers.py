"""The layer contract: imports point down the floors of `graph.LAYERS`, and no new circle
appears between modules or packages.

The lists below are the debts found when the contract was written; each entry is to be
paid off (and then removed here: a test fails on an entry that no longer holds, so the
lists only shrink). A new upward import or circle fails the suite.
"""

from __future__ import annotations

from tests.architecture.graph import (
    LAYERS,
    layer_of,
    module_cycles,
    modules,
    package_cycles,
    upward_imports,
)

KNOWN_UPWARD: set[tuple[str, str]] = set()

KNOWN_MODULE_CIRCLES: list[set[str]] = []

KNOWN_PACKAGE_CIRCLES: list[set[str]] = []


def test_every_module_is_on_a_floor():
    for name in modules():
        assert 0 <= layer_of(name) < len(LAYERS)


def test_no_new_upward_import():
    found = upward_imports()
    new = sorted(found - KNOWN_UPWARD)
    assert not new, f"imports that point up the floors (move the code down, or the import): {new}"
    paid = sorted(KNOWN_UPWARD - found)
    assert not paid, f"paid off, remove from KNOWN_UPWARD: {paid}"


def _within(circle: set[str], known: list[set[str]]) -> bool:
    return any(circle <= k for k in known)


def test_no_new_circle_between_modules():
    found = module_cycles()
    new = [sorted(c) for c in found if not _within(c, KNOWN_MODULE_CIRCLES)]
    assert not new, f"new import circles: {new}"
    paid = [
        sorted(k) for k in KNOWN_MODULE_CIRCLES if not any(c <= k and len(c) > 1 for c in found)
    ]
    assert not paid, f"circles gone, remove from KNOWN_MODULE_CIRCLES: {paid}"


def test_no_new_circle_between_packages():
    # Today's package circles run through the known upward imports; leave those out and
    # none may remain. (The last sideways one, backup <-> monitoring, is gone: the backup
    # repository's connectivity probe is declared by backup, in health.registry.PROBES.)
    found = package_cycles(ignoring=KNOWN_UPWARD)
    new = [sorted(c) for c in found if not _within(c, KNOWN_PACKAGE_CIRCLES)]
    assert not new, f"new circles between packages: {new}"
    paid = [sorted(k) for k in KNOWN_PACKAGE_CIRCLES if not any(c <= k for c in found)]
    assert not paid, f"circles gone, remove from KNOWN_PACKAGE_CIRCLES: {paid}"


def test_the_contract_sees_a_planted_upward_import(tmp_path, monkeypatch):
    # the contract must be able to fail: plant a storage module importing the API
    import tests.architecture.graph as graph

    fake_src = tmp_path / "src"
    for path in graph.SRC.joinpath("sctk").rglob("*.py"):
        target = fake_src / path.relative_to(graph.SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (fake_src / "sctk" / "storage" / "planted.py").write_text(
        "from sctk.api.app import create_app\n"
    )
    (fake_src / "sctk" / "bus" / "planted.py").write_text(
        "def f():\n    from sctk.bus import planted_too\n"
    )
    (fake_src / "sctk" / "bus" / "planted_too.py").write_text("from sctk.bus.planted import f\n")
    monkeypatch.setattr(graph, "SRC", fake_src)
    graph.modules.cache_clear()
    try:
        assert ("sctk.storage.planted", "sctk.api.app") in graph.upward_imports()
        assert {"sctk.bus.planted", "sctk.bus.planted_too"} in graph.module_cycles()
        assert any({"storage", "api"} <= c for c in graph.package_cycles())
    finally:
        graph.modules.cache_clear()
