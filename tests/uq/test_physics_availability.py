"""A physics the service can find: the sentence for a name no registry holds differs from the
one for a registered name whose package is missing or broken, and both come at submission
(over HTTP and in the CLI), before any job is queued."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sctk.uq import physics_registry
from tests.security.conftest import (  # noqa: F401 - fixtures used by name
    GENEROUS_LIMITS,
    accounts,
    assert_cli_error,
    assert_problem,
    engine,
    sqlite_only,
    start_api,
)
from tests.security.conftest import api as api
from tests.uq.registry_helpers import TINY, frame, import_csv


def _package(root: Path, module: str, body: str, entry: str) -> None:
    """An installed distribution at ROOT: MODULE.py with BODY, declaring ENTRY under the
    'sctk.physics' entry points (what `pip install` of a package with that pyproject gives)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(body, encoding="utf-8")
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n", "utf-8"
    )
    (info / "entry_points.txt").write_text(f"[sctk.physics]\n{entry}\n", encoding="utf-8")


BROKEN = "import ops23_dependency_not_installed\n\n\ndef drag(X):\n    return X[:, 0]\n"
FAILING = "raise RuntimeError('the drag tables are missing')\n\n\ndef drag(X):\n    return X\n"


@sqlite_only
def test_not_registered_and_registered_but_not_importable_are_told_apart(
    settings, tmp_path, sctk_here, monkeypatch
):
    site = tmp_path / "site"
    _package(site, "ops23_broken_physics", BROKEN, "broken = ops23_broken_physics:drag")
    _package(site, "ops23_failing_physics", FAILING, "failing = ops23_failing_physics:drag")
    monkeypatch.syspath_prepend(str(site))
    import_csv(settings, frame(40), "runs")
    home = settings.home

    def train(physics: str):
        config = tmp_path / "model.toml"
        config.write_text(f'[model]\nphysics = "{physics}"\nepochs = 2\n', encoding="utf-8")
        args = ("uq", "train", "--data", "runs", "--target", "y", "--config", str(config))
        return sctk_here(*args, home=home)

    unknown = assert_cli_error(train("mylab.models:drag"), "The physics 'mylab.models:drag'")
    assert "is not registered; choose one of" in unknown and "cannot be used" not in unknown
    assert "physics_allowed" in unknown and "'sctk.physics' entry points" in unknown
    assert "mylab" not in sys.modules  # refused by name, never imported

    missing = assert_cli_error(train("broken"), "The physics 'ops23_broken_physics:drag'")
    assert (
        "is registered (declared by an installed package's 'sctk.physics' entry point "
        "'broken') but cannot be used: its module 'ops23_dependency_not_installed' is not "
        "installed; install or fix the package that holds it"
    ) in missing
    assert "not registered" not in missing

    failing = assert_cli_error(train("failing"), "The physics 'ops23_failing_physics:drag'")
    assert "importing 'ops23_failing_physics' failed: RuntimeError: the drag tables" in failing

    # an admin-listed name whose module has no such function
    text = settings.config_file.read_text(encoding="utf-8")
    name = "tests.uq.admin_physics:no_such_function"
    text = text.replace("# physics_allowed = []", f'physics_allowed = ["{name}"]')
    settings.config_file.write_text(text, encoding="utf-8")
    absent = assert_cli_error(train(name), f"The physics '{name}' is registered (listed under")
    assert "the module 'tests.uq.admin_physics' has no 'no_such_function'" in absent

    jobs = sctk_here("jobs", "list", "--json", home=home)
    assert jobs.returncode == 0 and json.loads(jobs.stdout) == []  # nothing was queued


@sqlite_only
def test_the_service_refuses_both_with_their_own_sentence(api, tmp_path, monkeypatch):
    site = tmp_path / "site"
    _package(site, "ops23_svc_physics", BROKEN, "svc_broken = ops23_svc_physics:drag")
    monkeypatch.syspath_prepend(str(site))
    import_csv(api.settings, frame(40), "runs")
    h = api.headers("analyst")
    for physics, sentence in (
        ("mylab.models:drag", "The physics 'mylab.models:drag' is not registered"),
        ("svc_broken", "The physics 'ops23_svc_physics:drag' is registered (declared by an"),
    ):
        body = {"dataset": "runs", "target": "y", "config": {**TINY, "physics": physics}}
        assert_problem(api.http.post("/api/v1/models", json=body, headers=h), 400, sentence)
    assert api.http.get("/api/v1/jobs", headers=h).json() == []
    assert "ops23_svc_physics:drag" in physics_registry.choices()  # registered all along
