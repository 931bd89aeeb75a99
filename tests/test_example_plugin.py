"""The example plugin package (examples/sctk-example-plugin), installed with pip as a user
would, adds a physics function, an anomaly detector and a maintenance task that sctk's own
commands then use; a plugin that fails to import is left out, named with its error, and
sctk keeps working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_sctk
from tests.security.conftest import sqlite_only

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sctk-example-plugin"

pytestmark = [pytest.mark.e2e, sqlite_only]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A directory the example package is installed into (pip, no network: its only
    dependency, sctk, is already installed)."""
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(EXAMPLE)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return target


def _plugins(env: dict[str, str]) -> dict[str, dict]:
    listed = run_sctk("plugins", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    return {p["name"]: p for p in json.loads(listed.stdout)}


def test_the_installed_example_adds_a_physics_function_a_detector_and_a_task(site, home):
    env = {"PYTHONPATH": str(site)}
    plugins = _plugins(env)
    assert plugins["example"]["builtin"] is False
    assert plugins["example"]["package"] == "sctk-example-plugin 0.1.0"
    assert plugins["example"]["adds"] == {
        "maintenance tasks": ["example.results_count"],
        "anomaly detectors": ["example_mad"],
    }
    assert plugins["ops"]["builtin"] and "example.results_count" not in str(plugins["ops"])

    # the task runs as any other, recorded, and does what it says
    (home / "results" / "run-1").mkdir(parents=True)
    (home / "results" / "run-1" / "out.csv").write_text("a\n1\n")
    ran = run_sctk("maintenance", "run", "example.results_count", "--json", home=home, env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)[0]["summary"] == "1 result files"
    history = run_sctk("maintenance", "history", "--json", home=home, env=env)
    assert "example.results_count" in history.stdout

    # the detector is selectable in the settings, and validated like a built-in one
    chosen = run_sctk("config", "set", "anomaly.detector", "example_mad", home=home, env=env)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    checked = run_sctk("config", "check", home=home, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    unknown = run_sctk("config", "set", "anomaly.detector", "example_mad", home=home)
    assert unknown.returncode != 0 and "Unknown anomaly detector 'example_mad'" in unknown.stderr
    bad = home / "bad.toml"
    bad.write_text('[anomaly]\ndetector = "example_mad"\nparams = { window = 60, q = 1 }\n')
    refused = run_sctk("config", "check", str(bad), home=home, env=env)
    assert refused.returncode != 0 and "has no parameter 'q'" in refused.stdout + refused.stderr

    # the detector finds a spike; the physics function is found by the name a model gives
    used = subprocess.run(
        [sys.executable, "-c", (
            "import numpy as np\n"
            "from sctk.monitoring.anomaly import make_detector\n"
            "from sctk.uq.physics_registry import resolve\n"
            "d = make_detector('example_mad', window=40)\n"
            "found = [d.update(float(t), 5.0 + (t % 3) * 0.1 + (50 if t == 70 else 0))"
            " for t in range(100)]\n"
            "print([i for i, a in enumerate(found) if a])\n"
            "print(resolve('decay')(np.array([[0.0], [1.0]])).round(4).tolist())\n"
        )],
        capture_output=True, text=True, env={**_clean_env(), "PYTHONPATH": str(site)}, timeout=120,
    )  # fmt: skip
    assert used.returncode == 0, used.stderr
    assert used.stdout.split("\n")[:2] == ["[70]", "[1.0, 0.3679]"]


def test_without_the_example_nothing_of_it_is_there(home):
    plugins = _plugins({})
    assert "example" not in plugins
    refused = run_sctk("maintenance", "run", "example.results_count", home=home)
    assert refused.returncode == 1 and "Unknown maintenance task" in refused.stderr


def test_a_plugin_that_fails_to_import_is_left_out_and_named(tmp_path, home):
    # an installed distribution (its metadata on the path) whose plugin module is broken
    site = tmp_path / "broken-site"
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sctk.plugins]\nbroken = broken_plugin_module\n")
    (site / "broken_plugin_module.py").write_text("raise RuntimeError('half installed')\n")
    env = {"PYTHONPATH": str(site)}
    plugins = _plugins(env)
    assert plugins["broken"]["error"] == "failed to load: RuntimeError: half installed"
    assert plugins["broken"]["adds"] == {}
    # everything else works without it
    tasks = run_sctk("maintenance", "list", "--json", home=home, env=env)
    assert tasks.returncode == 0 and "backup" in tasks.stdout
    health = run_sctk("health", "--json", home=home, env=env)
    assert "database" in health.stdout


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
