"""`sctk selftest`: every step passes on a sound installation (SQLite and PostgreSQL), and a
step broken on purpose fails by name while the live data directory is never touched."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from sctk.errors import ConfigError
from sctk.ops import selftest
from tests.conftest import PG_URL, _admin_url
from tests.helpers import run_sctk

STEPS = ["home", "database", "plugins", "uq", "jobs", "backup", "bus", "health"]


@pytest.fixture
def clean_env(monkeypatch):
    for name in selftest.live_environment():
        monkeypatch.delenv(name)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.glob("sctk-selftest-*"))


def selftest_databases() -> list[str]:
    engine = create_engine(_admin_url(PG_URL))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT datname FROM pg_database WHERE datname LIKE 'sctk_selftest_%'")
            )
            return [r[0] for r in rows]
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.e2e
def test_selftest_passes_on_sqlite_and_postgresql(tmp_path):
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set SCTK_TEST_POSTGRES_URL to run this test")
    before = set(selftest_databases())
    # a live-looking environment: the command must not let it reach the scratch home
    env = {"SCTK_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/live", "SCTK_HOME": "/nonexistent"}
    done = run_sctk(
        "selftest", "--quick", "--json", "--database", PG_URL, "--scratch", str(tmp_path), env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    names = [s["name"] for s in report["steps"]]
    assert names == ["home", "database", "postgresql", *STEPS[2:]]
    assert all(s["status"] == "pass" for s in report["steps"]), report["steps"]
    assert all(s["seconds"] > 0 for s in report["steps"])
    pg = next(s for s in report["steps"] if s["name"] == "postgresql")
    assert "migrated" in pg["message"] and "dropped" in pg["message"]
    assert set(selftest_databases()) == before  # the throwaway database is gone
    assert leftovers(tmp_path) == []  # and so is the scratch home
    assert report["summary"].startswith("self-test passed: 9 steps")
    assert not Path("/nonexistent").exists()


def test_an_unreachable_database_fails_its_step_by_name(clean_env, tmp_path):
    report = selftest.run(
        quick=True, database_url="postgresql://postgres@127.0.0.1:9/none", scratch=tmp_path
    )
    assert not report.ok
    status = {s.name: s.status for s in report.steps}
    assert status.pop("postgresql") == "fail"
    assert set(status.values()) == {"pass"}, report.steps  # SQLite and the rest still pass
    assert report.sentence().startswith("self-test step 'postgresql' failed: Cannot create")
    assert "127.0.0.1:9" in report.sentence() or "127.0.0.1" in report.sentence()
    uq = next(s for s in report.steps if s.name == "uq")
    covered = float(uq.message.split("covered ")[1].split("%")[0])
    assert covered >= selftest.MIN_COVERAGE * 100
    assert leftovers(tmp_path) == []


def test_a_read_only_scratch_directory_fails_the_home_step(tmp_path):
    # /proc refuses new files even to root, who passes every permission bit
    done = run_sctk("selftest", "--quick", "--scratch", "/proc/sctk-selftest")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "self-test step 'home' failed: /proc" in done.stdout
    assert "not writable" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    done = run_sctk("selftest", "--json", "--scratch", "/proc/sctk-selftest")
    report = json.loads(done.stdout)
    assert [s["status"] for s in report["steps"]] == ["fail"] + ["skip"] * (len(STEPS) - 1)


def test_the_domain_function_refuses_live_settings_in_its_environment(monkeypatch):
    monkeypatch.setenv("SCTK_DATABASE_URL", "postgresql://live@db/sctk")
    with pytest.raises(ConfigError, match="SCTK_DATABASE_URL"):
        selftest.run(quick=True, scratch=Path(tempfile.gettempdir()))


def test_doctor_runs_the_quick_selftest_among_the_startup_findings(tmp_path):
    from sctk.ops.init_home import init_home

    home = tmp_path / "home"
    init_home(home)
    done = run_sctk("doctor", "startup", "--selftest", "--json", home=home)
    findings = {f["name"]: f for f in json.loads(done.stdout)["findings"]}
    assert findings["selftest"]["severity"] == "ok", findings["selftest"]
    assert findings["selftest"]["message"].startswith("self-test passed: 8 steps")
    without = run_sctk("doctor", "startup", "--json", home=home)
    assert "selftest" not in {f["name"] for f in json.loads(without.stdout)["findings"]}
