"""Operations reports over a data directory seeded with a year of synthetic history."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import numpy as np

from sctk.ops import reports
from sctk.storage.engine import session_scope
from sctk.storage.models import (
    Alert,
    BackupRun,
    CheckResult,
    Incident,
    MaintenanceRun,
    UqModel,
)
from tests.helpers import run_sctk
from tests.security.conftest import sqlite_only

END = datetime(2026, 11, 1, tzinfo=UTC)


def seed_year(engine) -> None:
    rng = np.random.default_rng(5)
    with session_scope(engine) as s:
        for day in range(365):
            at = END - timedelta(days=day, hours=1)
            for hour in (0, 12):  # two health rounds a day; one round in 20 is down
                t = at - timedelta(hours=hour)
                down = rng.random() < 0.05
                s.add(
                    CheckResult(
                        name="database",
                        status="CRITICAL" if down else "OK",
                        message="",
                        checked_at=t,
                    )
                )
                s.add(CheckResult(name="disk", status="OK", message="", checked_at=t))
            s.add(BackupRun(kind="create", status="succeeded", started_at=at, finished_at=at))
            if day % 7 == 0:
                s.add(
                    BackupRun(
                        kind="verify",
                        status="succeeded",
                        started_at=at,
                        details={"read_data": True},
                    )
                )
            if day % 30 == 0:
                s.add(
                    MaintenanceRun(
                        task="compliance_audit",
                        status="warn",
                        started_at=at,
                        details={"score": 80 + day / 30},
                    )
                )
                s.add(
                    UqModel(
                        name="m",
                        version=day + 1,
                        kind="tabular",
                        path="x",
                        sha256="0" * 64,
                        metrics={"coverage": 0.9 + rng.normal(0, 0.01)},
                        created_at=at,
                    )
                )
            if day % 91 == 0:
                s.add(
                    MaintenanceRun(
                        task="dr_drill",
                        status="ok",
                        started_at=at,
                        details={"rto_seconds": 12.5, "rpo_seconds": 3600},
                    )
                )
        for k in range(6):
            opened = END - timedelta(days=40 * k + 3)
            s.add(
                Incident(
                    title=f"disk full {k}",
                    severity="critical",
                    status="closed",
                    opened_at=opened,
                    closed_at=opened + timedelta(hours=2),
                )
            )
            s.add(
                Alert(
                    fingerprint=f"f{k}",
                    rule="disk_percent",
                    metric="disk_percent",
                    severity="critical",
                    started_at=opened,
                )
            )
        s.add(
            Alert(
                fingerprint="c",
                rule="cpu_percent",
                metric="cpu_percent",
                severity="warning",
                started_at=END - timedelta(days=2),
            )
        )


def test_a_year_report_renders_in_html_with_its_plots(settings, engine):
    seed_year(engine)
    built = reports.build(settings, "year", end=END)
    s = built.sections
    assert s["health_rounds"] == 730 and 90 < s["availability_percent"] < 99
    assert s["incidents"] == 6 and s["incident_hours_total"] == 12.0
    assert s["alerts_by_rule"] == {"disk_percent": 6, "cpu_percent": 1}
    assert s["backups_taken"] == 365 and s["backups_verified"] == 53
    assert len(s["restore_drills"]) == 5 and s["restore_drills"][0]["rto_seconds"] == 12.5
    assert len(built.series["model coverage"]) == 13

    page = reports.render(built, "html")
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 4  # availability, backups, audit score, model coverage
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG")
    assert "6 (0 open), 12 h in all, longest 2 h" in page
    md = reports.render(built, "md")
    assert "| backups | 365 taken, 0 failed, 53 verified |" in md


def test_a_quarter_counts_only_its_own_history(settings, engine):
    seed_year(engine)
    built = reports.build(settings, "quarter", end=END)
    assert built.sections["backups_taken"] == 91 and built.sections["incidents"] == 3


@sqlite_only
def test_cli_writes_the_report_and_refuses_bad_input(settings):
    r = run_sctk("report", "--period", "month", "--format", "md", home=settings.home)
    assert r.returncode == 0, r.stderr
    assert list(settings.home.glob("reports/ops-month-*.md"))
    r = run_sctk("report", "--period", "decade", home=settings.home)
    assert (
        r.returncode != 0
        and "Unknown period 'decade'; use one of month, quarter, year." in r.stderr
    )
    r = run_sctk("report", "--format", "pdf", home=settings.home)
    assert r.returncode != 0 and "Unknown format 'pdf'" in r.stderr


def test_the_monthly_report_is_announced_over_the_webhook(settings, engine):
    from sctk import config
    from sctk.monitoring import notifiers
    from sctk.security.keyring import Keyring
    from tests.helpers import run_task
    from tests.monitoring.test_notifiers import Webhook

    hook = Webhook()
    try:
        with session_scope(engine) as s:
            notifiers.set_webhook(s, Keyring.load(settings.home), hook.url, actor="test")
        s = config.load(settings.home, {"alerts": {"channels": ["log", "webhook"]}}).settings
        record = run_task(s, "ops_report")
        assert record.status == "ok" and record.details["sent_over"] == ["webhook"]
        (body,) = hook.bodies
        assert "month operations report" in str(body) and "ops-month-" in str(body)
    finally:
        hook.close()
