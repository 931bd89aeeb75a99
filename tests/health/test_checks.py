"""The platform health checks against real data directories on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from sctk import config
from sctk.errors import SctkError
from sctk.health import Status, run_checks
from sctk.health.registry import record, registered
from sctk.runtime import Runtime
from sctk.storage import migrate
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import CheckResult
from tests.helpers import free_port

PLATFORM_CHECKS = ["database", "migrations", "disk", "data_dir", "logs_dir"]


@pytest.fixture
def engine(settings):
    engine = make_engine(settings)
    yield engine
    engine.dispose()


def by_name(report):
    return {o.name: o for o in report.outcomes}


def free_percent(path) -> float:
    usage = shutil.disk_usage(path)
    return 100.0 * usage.free / usage.total


def test_fresh_home_is_healthy(settings, backend, monkeypatch):
    # with a backup passphrase configured (without one the backup check WARNs, as it should)
    monkeypatch.setenv("SCTK_BACKUP_PASSPHRASE", "amber-lattice-tundra-0451")
    # thresholds below the actual free space, so a nearly full test machine cannot fail this
    free = free_percent(settings.home)
    s = config.load(
        settings.home,
        {
            "health": {
                "disk_warning_free_percent": free / 2,
                "disk_critical_free_percent": free / 4,
            },
            # nor can a test machine busy with other tests
            "monitor": {"load_warning_per_core": 999},
        },
    ).settings
    report = run_checks(Runtime(s))
    outcomes = by_name(report)
    assert list(outcomes)[: len(PLATFORM_CHECKS)] == PLATFORM_CHECKS
    assert {n: o.status for n, o in outcomes.items()} == {n: Status.OK for n in outcomes}
    assert report.status is Status.OK
    assert report.failing == []
    assert outcomes["database"].values["backend"] == (
        "sqlite" if backend == "sqlite" else "postgresql"
    )
    assert outcomes["migrations"].values == {"current": migrate.head(), "head": migrate.head()}
    assert all(o.duration_ms >= 0 for o in report.outcomes)
    body = report.as_dict()
    assert body["status"] == "OK"
    assert [c["name"] for c in body["checks"]] == list(outcomes)


def test_unreachable_database(home):
    port = free_port()
    s = config.load(home, {"database_url": f"postgresql://sctk@127.0.0.1:{port}/sctk"}).settings
    report = run_checks(Runtime(s))
    outcomes = by_name(report)
    assert outcomes["database"].status is Status.CRITICAL
    assert f"127.0.0.1:{port}" in outcomes["database"].message
    assert outcomes["migrations"].status is Status.UNKNOWN
    assert "database" in outcomes["migrations"].message
    assert outcomes["data_dir"].status is Status.OK
    assert report.status is Status.CRITICAL
    assert int(report.status) == 2
    # the monitoring checks that need the database cannot tell either
    assert {o.name for o in report.failing} == {
        "database",
        "migrations",
        "workers",
        "scheduler",
        "connectivity",
        "backup",
    }


def test_schema_behind(settings, engine):
    migrate.downgrade(engine, "base")
    outcomes = by_name(run_checks(Runtime(settings, engine=engine)))
    assert outcomes["database"].status is Status.OK
    schema = outcomes["migrations"]
    assert schema.status is Status.CRITICAL
    assert "run 'sctk db upgrade'" in schema.message
    assert schema.values == {"current": None, "head": migrate.head()}

    oldest = migrate.history()[-1].revision
    migrate.upgrade(engine, oldest)
    schema = by_name(run_checks(Runtime(settings, engine=engine), ["migrations"]))["migrations"]
    if oldest == migrate.head():
        assert schema.status is Status.OK
    else:
        assert schema.status is Status.CRITICAL
        assert f"schema at {oldest}" in schema.message


def test_disk_thresholds(settings):
    free_now = free_percent(settings.home)
    scenarios = {
        "default": (15.0, 5.0, None),
        "fixed": (99.98, 99.97, None),
        "below free space": (free_now / 2, free_now / 4, Status.OK),
        "around free space": (min(99.99, (free_now + 100) / 2), free_now / 2, Status.WARNING),
    }
    for scenario, (warning, critical, expected) in scenarios.items():
        s = config.load(
            settings.home,
            {
                "health": {
                    "disk_warning_free_percent": warning,
                    "disk_critical_free_percent": critical,
                }
            },
        ).settings
        report = run_checks(Runtime(s), ["disk"])
        assert [o.name for o in report.outcomes] == ["disk"]
        outcome = report.outcomes[0]

        free = outcome.values["free_percent"]
        assert abs(free - free_percent(settings.home)) < 0.5, scenario
        if free < critical:
            want = Status.CRITICAL
        elif free < warning:
            want = Status.WARNING
        else:
            want = Status.OK
        assert outcome.status is want, scenario
        if expected is not None:
            assert want is expected, scenario
        assert report.status is want
        assert outcome.values["warning_below_percent"] == warning
        assert outcome.values["critical_below_percent"] == critical
        assert f"{free:.1f}% free" in outcome.message


def test_missing_logs_dir(settings):
    shutil.rmtree(settings.home / "logs")
    report = run_checks(Runtime(settings), ["logs_dir", "data_dir"])
    outcomes = by_name(report)
    assert outcomes["logs_dir"].status is Status.CRITICAL
    assert str(settings.home / "logs") in outcomes["logs_dir"].message
    assert "sctk init" in outcomes["logs_dir"].message
    assert outcomes["data_dir"].status is Status.OK
    assert report.status is Status.CRITICAL


def test_record_stores_one_row_per_outcome(settings, engine):
    first = run_checks(Runtime(settings, engine=engine))
    record(engine, first)
    second = run_checks(Runtime(settings, engine=engine), ["disk", "data_dir"])
    record(engine, second)

    with session_scope(engine) as session:
        rows = session.scalars(select(CheckResult).order_by(CheckResult.id)).all()
    assert len(rows) == len(first.outcomes) + len(second.outcomes)
    for row, outcome, report in zip(
        rows,
        [*first.outcomes, *second.outcomes],
        [first] * len(first.outcomes) + [second] * len(second.outcomes),
        strict=True,
    ):
        assert (row.name, row.status, row.message) == (
            outcome.name,
            outcome.status.name,
            outcome.message,
        )
        assert row.values == outcome.values
        assert row.checked_at == report.checked_at
        assert row.checked_at.tzinfo is not None


def test_unknown_check_name(tmp_path):
    settings = config.load(tmp_path / "home").settings
    with pytest.raises(SctkError) as info:
        run_checks(Runtime(settings), ["disk", "dsik"])
    assert "'dsik'" in info.value.message
    for name in PLATFORM_CHECKS:
        assert name in info.value.message


def test_registry_lists_platform_checks():
    checks = registered()
    assert set(PLATFORM_CHECKS) <= set(checks)
    assert checks["migrations"].depends_on == ("database",)
    assert all(c.description for c in checks.values())


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("damage", ["file missing", "empty schema"])
def test_health_cli_never_prints_a_traceback(home, damage):
    """A data directory whose database file is gone (or holds no tables): every check says
    what it found in one line; no traceback, no SQL, and no empty database made in passing."""
    from tests.helpers import run_sctk

    db = home / "sctk.db"
    if damage == "file missing":
        db.unlink()
    else:
        engine = make_engine(config.load(home).settings)
        migrate.downgrade(engine, "base")
        engine.dispose()
    done = run_sctk("health", home=home)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    for leak in ("Traceback", "[SQL:", "sqlalche.me", "OperationalError", "raised"):
        assert leak not in output, output
    rows = {line.split("│")[2].strip(): line for line in done.stdout.splitlines() if "│" in line}
    if damage == "file missing":
        assert "does not exist" in rows["database"] and "CRITICAL" in rows["database"]
        assert not db.exists(), "the health check created an empty database"
    else:
        assert "run 'sctk db upgrade'" in rows["migrations"]
    for name in ("workers", "scheduler"):
        assert "UNKNOWN" in rows[name] and "not checked" in rows[name], rows[name]
