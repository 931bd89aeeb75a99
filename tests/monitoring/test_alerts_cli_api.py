"""`sctk alerts` and /api/v1/alerts over the same stored alerts; bad rules in the settings."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from sctk import config
from sctk.errors import ConfigError
from sctk.monitoring import alerts
from sctk.monitoring.alert_engine import AlertEngine
from sctk.monitoring.rules import AlertSettings
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import AlertSilence, utcnow
from tests.helpers import run_sctk
from tests.security.conftest import (  # noqa: F401 - fixtures
    accounts,
    api,
    assert_problem,
    engine,
    sqlite_only,
    start_api,
)


def fire_one(eng, severity: str = "warning", metric: str = "cpu_percent") -> alerts.Alert:
    with session_scope(eng) as s:
        return alerts.fire(
            s, rule=metric, metric=metric, severity=severity, message=f"{metric} high",
            now=utcnow(), value=88.0, threshold=70.0,
        )  # fmt: skip


def silences(eng) -> int:
    with session_scope(eng) as s:
        return s.scalar(select(func.count()).select_from(AlertSilence))


def _error_line(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_list_ack_silence_history(home, settings):
    eng = make_engine(settings)
    try:
        alert = fire_one(eng)
        other = fire_one(eng, "critical", "memory_percent")
        with session_scope(eng) as s:
            done = alerts.get(s, other.id)
            done.status, done.resolved_at = "resolved", utcnow()

        listed = run_sctk("alerts", "list", "--json", home=home)
        assert listed.returncode == 0, listed.stderr
        assert [a["id"] for a in json.loads(listed.stdout)] == [alert.id]
        everything = run_sctk("alerts", "list", "--all", "--json", home=home)
        assert [a["id"] for a in json.loads(everything.stdout)] == [other.id, alert.id]

        acked = run_sctk("alerts", "ack", str(alert.id), "--json", home=home)
        assert acked.returncode == 0, acked.stderr
        assert json.loads(acked.stdout)["acknowledged_by"].startswith("cli")

        past = run_sctk(
            "alerts", "silence", str(alert.id), "--until", "2020-01-01T00:00:00Z", home=home
        )
        assert "which is not in the future" in _error_line(past)
        unknown = run_sctk("alerts", "silence", "777", "--for", "2h", home=home)
        assert _error_line(unknown) == (
            "Error: No alert with id 777; 'sctk alerts list --all' shows them."
        )
        bad_for = run_sctk("alerts", "silence", str(alert.id), "--for", "soon", home=home)
        assert "is not a duration" in _error_line(bad_for)
        assert silences(eng) == 0  # nothing changed

        ok = run_sctk(
            "alerts", "silence", alert.fingerprint, "--for", "2h", "--reason", "maintenance",
            "--json", home=home,
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        silence = json.loads(ok.stdout)
        assert silence["fingerprint"] == alert.fingerprint and silence["reason"] == "maintenance"
        shown = json.loads(run_sctk("alerts", "list", "--json", home=home).stdout)
        assert shown[0]["silenced_until"] == silence["ends_at"]

        history = run_sctk("alerts", "history", "--alert", str(alert.id), "--json", home=home)
        kinds = [e["kind"] for e in json.loads(history.stdout)]
        assert kinds == ["silenced", "acknowledged", "fired"]  # newest first

        missing = run_sctk("alerts", "ack", "999", home=home)
        assert "No alert with id 999" in _error_line(missing)
        resolved = run_sctk("alerts", "ack", str(other.id), home=home)
        assert "resolved already" in _error_line(resolved)
    finally:
        eng.dispose()


def test_api_alerts(api):  # noqa: F811 - the fixture
    alert = fire_one(api.engine)
    http, admin, viewer = api.http, api.headers("admin"), api.headers("viewer")
    listed = http.get("/api/v1/alerts", headers=viewer).json()
    assert [a["id"] for a in listed] == [alert.id]
    assert http.get(f"/api/v1/alerts/{alert.id}", headers=viewer).json()["severity"] == "warning"

    r = http.post(f"/api/v1/alerts/{alert.id}/ack", headers=admin)
    assert r.status_code == 200 and r.json()["acknowledged_by"] == api.accounts["admin"].username

    past = (utcnow() - timedelta(minutes=1)).isoformat()
    assert_problem(
        http.post(
            "/api/v1/alerts/silences", json={"target": str(alert.id), "until": past}, headers=admin
        ),
        400,
        "not in the future",
    )
    assert_problem(http.get("/api/v1/alerts/424242", headers=viewer), 404, "No alert with id")
    assert_problem(http.post("/api/v1/alerts/424242/ack", headers=admin), 404)
    assert_problem(
        http.post(
            "/api/v1/alerts/silences", json={"target": "424242", "duration": "1h"}, headers=admin
        ),
        404,
    )
    assert silences(api.engine) == 0

    r = http.post(
        "/api/v1/alerts/silences",
        json={"target": alert.fingerprint, "duration": "90m", "reason": "deploy"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    active = http.get("/api/v1/alerts/silences", headers=viewer).json()
    assert [s["fingerprint"] for s in active] == [alert.fingerprint]

    events = http.get(f"/api/v1/alerts/{alert.id}/events", headers=viewer).json()
    assert [e["kind"] for e in events] == ["silenced", "acknowledged", "fired"]
    history = http.get("/api/v1/alerts/history", headers=viewer).json()
    assert {e["alert_id"] for e in history} == {alert.id}

    r = http.post("/api/v1/alerts/test-notify/log", headers=admin)
    assert r.status_code == 200 and r.json()["ok"] is True
    assert_problem(http.post("/api/v1/alerts/test-notify/pager", headers=admin), 400, "pager")
    assert_problem(
        http.post("/api/v1/alerts/test-notify/webhook", headers=admin), 400, "set-webhook"
    )


# -- bad rules in the settings ----------------------------------------------------------------


@sqlite_only
@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        (
            '[[alerts.rules]]\nmetric = "cpu_pct"\nwarning = 70\n',
            "names the unknown metric 'cpu_pct'",
        ),
        (
            '[[alerts.rules]]\nmetric = "disk_percent"\nwarning = 85\ncritical = 120\n',
            "120 is outside 0..100",
        ),
        (
            '[[alerts.rules]]\nmetric = "load1"\non = "anomaly_score"\nwarning = 5\n',
            "5 is outside 0..1 for an anomaly score",
        ),
        (
            '[[alerts.rules]]\nmetric = "memory_percent"\nwarning = 95\ncritical = 80\n',
            "the warning level 95 is above the critical level 80",
        ),
        (
            '[[alerts.trend_rules]]\nmetric = "gpu_percent"\nkind = "sustained"\n',
            "unknown metric 'gpu_percent'",
        ),
    ],
)
def test_bad_rules_are_refused_with_one_sentence(home, toml, fragment):
    path = home / "sctk.toml"
    original = path.read_text()
    path.write_text(original + "\n" + toml)
    with pytest.raises(ConfigError) as info:
        config.load(home)
    assert fragment in info.value.message
    assert "alerts" in info.value.message

    checked = run_sctk("config", "check", str(path), home=home)
    assert checked.returncode != 0
    assert fragment in checked.stdout + checked.stderr
    listed = run_sctk("alerts", "list", home=home)
    assert fragment in _error_line(listed)
    assert path.read_text() == original + "\n" + toml  # nothing rewritten


@sqlite_only
def test_declared_application_metrics_may_have_rules_and_the_engine_checks_its_own(settings):
    cfg = AlertSettings(
        app_metrics=["queue_depth"],
        rules=[{"metric": "queue_depth", "warning": 100, "critical": 1000}],
        trend_rules=[],
    )
    assert cfg.rules[0].name == "queue_depth"
    # an engine given rules its process cannot measure refuses to start
    unchecked = AlertSettings.model_construct(
        rules=cfg.rules, trend_rules=[], app_metrics=[], cooldown_seconds=300
    )
    eng = make_engine(settings)
    try:
        from sqlalchemy.orm import sessionmaker

        with pytest.raises(ConfigError, match="unknown metric 'queue_depth'"):
            AlertEngine(unchecked, sessionmaker(eng), None)
        AlertEngine(unchecked, sessionmaker(eng), None, known_metrics=["queue_depth"])
    finally:
        eng.dispose()
