"""`sctk deps upgrade` in a throwaway virtual environment, against wheels built here.

The environment is a venv (no pip of its own, made in a fraction of a second) that sees the
test interpreter's packages through a .pth file and this sctk's source first; pip installs
into the venv alone. The package upgraded is a physics plugin of sctk, built by this module
in three versions with setuptools and served from local --find-links directories (pip runs
with --no-index: no network): 1.0 and 1.1 are sound; 2.0 imports a module its wheel lacks,
so the self-test's plugins step, which loads every `sctk.physics` entry point, fails on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select

import sctk
from sctk import config, runstate
from sctk.ops.init_home import init_home
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import AuditEntry, MaintenanceRun, NotificationAttempt

# one xdist worker builds the wheels and the venv once and runs every test on them
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("deps-upgrade-venv")]

PLUGIN = "sctk-plugin-drag"
SOUND = """
import numpy as np


def drag(X):
    return 0.5 * np.asarray(X, dtype=float)[:, 0] ** 2
"""
# 2.0 moved the kernel into a compiled module that this wheel does not carry
BROKEN = """
from sctk_plugin_drag._native import drag_kernel as drag
"""


def _source(src_root: Path, version: str, body: str) -> Path:
    src = src_root / f"drag-{version}"
    (src / "sctk_plugin_drag").mkdir(parents=True)
    (src / "sctk_plugin_drag" / "__init__.py").write_text(body)
    (src / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{PLUGIN}"
        version = "{version}"

        [project.entry-points."sctk.physics"]
        drag = "sctk_plugin_drag:drag"

        [tool.setuptools]
        packages = ["sctk_plugin_drag"]
        """)
    )
    return src


PIP_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("SCTK_", "PIP_"))},
    "PIP_CONFIG_FILE": "/dev/null",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "COLUMNS": "200",
}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    """Two --find-links directories: 'sound' (1.0, 1.1) and 'all' (also the broken 2.0)."""
    root = tmp_path_factory.mktemp("wheels")
    built = root / "built"
    sources = [
        str(_source(root / "src", version, body))
        for version, body in (("1.0", SOUND), ("1.1", SOUND), ("2.0", BROKEN))
    ]
    # setuptools' PEP 517 backend (sctk's own) builds each in a process of its own (it keeps
    # state between builds), with no index and no isolated build environment
    built.mkdir()
    for src in sources:
        build = f"import setuptools.build_meta as m; m.build_wheel({str(built)!r})"
        done = subprocess.run(
            [sys.executable, "-c", build],
            capture_output=True, text=True, env=PIP_ENV, timeout=300, cwd=src,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    dirs = {"sound": root / "sound", "all": root / "all"}
    for name, versions in (("sound", ("1.0", "1.1")), ("all", ("1.0", "1.1", "2.0"))):
        dirs[name].mkdir()
        for version in versions:
            wheel = next(built.glob(f"sctk_plugin_drag-{version}-*.whl"))
            (dirs[name] / wheel.name).write_bytes(wheel.read_bytes())
    return dirs


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(path), "platbase": str(path)})["purelib"])
    source = Path(sctk.__file__).resolve().parents[1]  # this sctk, ahead of any installed one
    parent = sysconfig.get_paths()["purelib"]
    (site / "_sctk_test_parent.pth").write_text(
        f"{source}\nimport site; site.addsitedir({parent!r})\n"
    )
    return path


def in_venv(venv: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), *args],
        capture_output=True, text=True, env=PIP_ENV, timeout=timeout,
    )  # fmt: skip


def pip_list(venv: Path) -> list[dict[str, str]]:
    done = in_venv(venv, "-m", "pip", "list", "--format=json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def plugin_in_venv(venv: Path) -> str | None:
    """The plugin's version as the venv's interpreter sees it (faster than pip's list)."""
    done = in_venv(venv, "-c", f"import importlib.metadata as m; print(m.version({PLUGIN!r}))")
    return done.stdout.strip() if done.returncode == 0 else None


@pytest.fixture
def env_at_1_0(venv, wheels) -> Path:
    """The venv with the plugin at 1.0, whatever an earlier test left."""
    if plugin_in_venv(venv) != "1.0":
        done = in_venv(
            venv, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall",
            f"--find-links={wheels['sound']}", f"{PLUGIN}==1.0",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert plugin_in_venv(venv) == "1.0"
    return venv


@pytest.fixture
def home(tmp_path) -> Path:
    path = tmp_path / "home"
    init_home(path)
    return path


def upgrade(venv: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return in_venv(venv, "-m", "sctk", "--home", str(home), "deps", "upgrade", *args)


def notices(home: Path) -> list[tuple[str, str, bool]]:
    """(kind, channel, ok) of every notification attempt recorded on HOME."""
    engine = make_engine(config.load(home).settings)
    try:
        with session_scope(engine) as s:
            return [(n.kind, n.channel, n.ok) for n in s.scalars(select(NotificationAttempt))]
    finally:
        engine.dispose()


def runs_and_audit(home: Path) -> tuple[list[MaintenanceRun], list[AuditEntry]]:
    engine = make_engine(config.load(home).settings)
    try:
        with session_scope(engine) as s:
            runs = list(
                s.scalars(select(MaintenanceRun).where(MaintenanceRun.task == "deps_upgrade"))
            )
            entries = list(s.scalars(select(AuditEntry).where(AuditEntry.event == "deps.upgrade")))
            s.expunge_all()
            return runs, entries
    finally:
        engine.dispose()


def test_an_upgrade_that_passes_is_kept_and_recorded(env_at_1_0, wheels, home):
    venv = env_at_1_0
    done = upgrade(venv, home, f"--find-links={wheels['sound']}", "--yes", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and not result["rolled_back"], result["message"]
    assert result["changed"] == {PLUGIN: ["1.0", "1.1"]}
    assert [
        (p["name"], p["installed"], p["version"], p["group"]) for p in result["plan"]["upgrades"]
    ] == [(PLUGIN, "1.0", "1.1", "scientific")]
    assert plugin_in_venv(venv) == "1.1"  # kept
    assert "Restart any sctk service" in result["message"]
    lock = Path(result["lock_file"])
    saved = {p["name"]: p for p in json.loads(lock.read_text())["packages"]}
    assert saved[PLUGIN]["version"] == "1.0" and len(saved[PLUGIN]["record_sha256"]) == 64
    assert f"{PLUGIN}==1.0\n" in lock.with_suffix(".txt").read_text()
    runs, entries = runs_and_audit(home)
    assert [(r.status, r.details["changed"]) for r in runs] == [("ok", {PLUGIN: ["1.0", "1.1"]})]
    assert [e.outcome for e in entries] == ["ok"]
    assert notices(home) == [("report", "log", True)]  # the notice went out on the channels


def test_an_upgrade_that_breaks_the_selftest_is_rolled_back_exactly(env_at_1_0, wheels, home):
    venv = env_at_1_0
    before = pip_list(venv)
    done = upgrade(venv, home, f"--find-links={wheels['all']}", "--yes")
    assert done.returncode == 1, done.stdout + done.stderr
    assert pip_list(venv) == before  # the exact saved set, nothing more or less
    assert "planned upgrades" in done.stdout  # the plan is shown before anything changes
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(
        "Upgrade rolled back: the scientific group (sctk-plugin-drag 1.0 -> 2.0)"
    )
    assert "failed the self-test: self-test step 'plugins' failed: physics 'drag' of " in last
    assert "No module named 'sctk_plugin_drag._native'" in last
    assert "the saved set was reinstalled" in last
    runs, entries = runs_and_audit(home)
    assert [(r.status, r.details["failed_step"], r.details["rolled_back"]) for r in runs] == [
        ("fail", "selftest", True)
    ]
    assert [e.outcome for e in entries] == ["failure"]
    assert notices(home) == [("report", "log", True)]


def test_a_dry_run_shows_the_plan_and_changes_nothing(env_at_1_0, wheels, home):
    venv = env_at_1_0
    before = pip_list(venv)
    done = upgrade(venv, home, f"--find-links={wheels['all']}", "--dry-run", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert [(p["name"], p["version"]) for p in result["plan"]["upgrades"]] == [(PLUGIN, "2.0")]
    assert result["dry_run"] and result["lock_file"] is None
    assert pip_list(venv) == before
    assert not (home / "archive" / "deps").exists()
    assert runs_and_audit(home) == ([], []) and notices(home) == []


def test_refused_while_a_service_runs_on_the_home(env_at_1_0, wheels, home):
    venv = env_at_1_0
    before = pip_list(venv)
    runstate.write_pid(home, pid=os.getpid(), role="api", url="http://127.0.0.1:8000")
    try:
        done = upgrade(venv, home, f"--find-links={wheels['sound']}", "--yes")
    finally:
        runstate.clear_pid(home, os.getpid())
    assert done.returncode != 0
    assert f"pid {os.getpid()}, role api" in done.stderr and "--force" in done.stderr
    assert "restart it afterwards" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3 and "Traceback" not in done.stderr
    assert pip_list(venv) == before
    assert runs_and_audit(home) == ([], [])


def test_bad_choices_are_one_sentence_each(env_at_1_0, wheels, home):
    venv = env_at_1_0
    for args, said in (
        (["--only", "left-pad"], "'left-pad' is not an installed dependency or plugin of sctk"),
        (["--group", "gpu"], "Unknown group 'gpu'"),
        (["--json"], "--json cannot ask before upgrading; add --yes"),
    ):
        done = upgrade(venv, home, f"--find-links={wheels['sound']}", *args)
        assert done.returncode == 1 and said in done.stderr, done.stderr
    assert plugin_in_venv(venv) == "1.0"
