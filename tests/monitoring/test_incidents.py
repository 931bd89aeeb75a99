"""Incidents: opened or joined by critical alerts, timelines, notes, owners, closing; the CLI
and the API over the same functions."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from sctk.errors import Conflict, NotFound, SctkError
from sctk.monitoring import incidents
from sctk.monitoring.alert_engine import AlertEngine
from sctk.monitoring.clock import ManualClock
from sctk.monitoring.rules import AlertSettings, ThresholdRule
from sctk.security import audit_log
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import Incident, IncidentEvent
from tests.helpers import run_sctk
from tests.security.conftest import (  # noqa: F401 - fixtures
    accounts,
    api,
    assert_problem,
    engine,
    start_api,
)


def test_critical_alerts_open_an_incident_and_later_ones_join_it(settings):
    eng = make_engine(settings)
    sessions = sessionmaker(eng, expire_on_commit=False)
    cfg = AlertSettings(
        rules=[ThresholdRule(metric="memory_percent", warning=80, critical=95, for_seconds=0)],
        trend_rules=[],
        cooldown_seconds=60,
    )
    clock = ManualClock()
    alerting = AlertEngine(cfg, sessions, None, clock=clock)
    try:
        for value in [97.0] * 5 + [50.0] * 61 + [98.0] * 5 + [50.0] * 61:
            alerting.observe(clock.advance(1), {"memory_percent": value})
        with sessions() as s:
            (incident,) = s.scalars(select(Incident)).all()
            kinds = [e.kind for e in incidents.timeline(s, incident.id)]
        assert kinds == ["opened", "alert.fired", "alert.resolved", "alert.fired", "alert.resolved"]
        assert incident.status == "open" and incident.severity == "critical"

        with session_scope(eng) as s:
            incidents.close(s, incident.id, "swap added", actor="tester")
        for value in [99.0] * 3:
            alerting.observe(clock.advance(1), {"memory_percent": value})
        with sessions() as s:
            listed = incidents.list_incidents(s)
        assert [i.status for i in listed] == ["open", "closed"]  # a closed one is not reopened
    finally:
        eng.dispose()


def test_timeline_notes_owner_and_closing(settings):
    eng = make_engine(settings)
    try:
        with session_scope(eng) as s:
            inc = incidents.open_incident(s, "disk filling", "warning", actor="ops")
            incidents.add_event(
                s, inc.id, "action", "cleared tmp", actor="sctk emergency", details={"freed": 3}
            )
            incidents.note(s, inc.id, "looks like log growth", actor="ops")
            incidents.set_owner(s, inc.id, "ada", actor="ops")
            incidents.close(s, inc.id, "log rotation fixed", actor="ops")
            inc_id = inc.id
        with session_scope(eng) as s:
            data = incidents.show(s, inc_id)
            assert data["owner"] == "ada" and data["resolution"] == "log rotation fixed"
            assert [e["kind"] for e in data["timeline"]] == [
                "opened", "action", "note", "owner", "closed",
            ]  # fmt: skip
            assert data["timeline"][1]["details"] == {"freed": 3}
            assert {e.event for e in audit_log.entries(s)} >= {"incident.noted", "incident.closed"}

        with pytest.raises(Conflict, match="closed already"), session_scope(eng) as s:
            incidents.close(s, inc_id, "again", actor="ops")
        with pytest.raises(NotFound, match="No incident with id 999"), session_scope(eng) as s:
            incidents.note(s, 999, "x", actor="ops")
        with pytest.raises(SctkError, match="resolution is empty"), session_scope(eng) as s:
            incidents.close(s, incidents.open_incident(s, "t", "info").id, "  ", actor="ops")
        with pytest.raises(SctkError, match="Unknown severity"), session_scope(eng) as s:
            incidents.open_incident(s, "t", "sev1")
        with session_scope(eng) as s:
            assert len(s.scalars(select(IncidentEvent)).all()) == 5  # the failures added nothing
    finally:
        eng.dispose()


def test_cli_incident_list_show_note_close(home, settings):
    eng = make_engine(settings)
    try:
        with session_scope(eng) as s:
            inc_id = incidents.open_incident(s, "api slow", "critical", actor="ops").id
    finally:
        eng.dispose()
    listed = run_sctk("incident", "list", "--json", home=home)
    assert listed.returncode == 0, listed.stderr
    assert [(i["id"], i["status"]) for i in json.loads(listed.stdout)] == [(inc_id, "open")]

    noted = run_sctk("incident", "note", str(inc_id), "restarted workers", home=home)
    assert noted.returncode == 0, noted.stderr
    closed = run_sctk(
        "incident", "close", str(inc_id), "--resolution", "worker leak fixed", "--json", home=home
    )
    assert closed.returncode == 0, closed.stderr
    assert json.loads(closed.stdout)["status"] == "closed"

    shown = run_sctk("incident", "show", str(inc_id), "--json", home=home)
    data = json.loads(shown.stdout)
    assert [e["kind"] for e in data["timeline"]] == ["opened", "note", "closed"]
    assert data["timeline"][1]["text"] == "restarted workers"
    assert data["timeline"][1]["actor"].startswith("cli")

    again = run_sctk("incident", "close", str(inc_id), "--resolution", "x", home=home)
    assert again.returncode != 0 and "closed already" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    missing = run_sctk("incident", "show", "4242", home=home)
    assert missing.returncode != 0
    assert missing.stderr.strip() == (
        "Error: No incident with id 4242; 'sctk incident list' shows them."
    )


def test_api_incidents(api):  # noqa: F811 - the fixture
    with session_scope(api.engine) as s:
        inc_id = incidents.open_incident(s, "queue stuck", "critical").id
    http, admin, viewer = api.http, api.headers("admin"), api.headers("viewer")
    assert [i["id"] for i in http.get("/api/v1/incidents", headers=viewer).json()] == [inc_id]
    r = http.post(
        f"/api/v1/incidents/{inc_id}/notes", json={"text": "drained queue"}, headers=admin
    )
    assert r.status_code == 201, r.text
    assert r.json()["actor"] == api.accounts["admin"].username
    r = http.post(
        f"/api/v1/incidents/{inc_id}/close", json={"resolution": "scheduler fixed"}, headers=admin
    )
    assert r.status_code == 200 and r.json()["status"] == "closed", r.text
    detail = http.get(f"/api/v1/incidents/{inc_id}", headers=viewer).json()
    assert [e["kind"] for e in detail["timeline"]] == ["opened", "note", "closed"]
    assert http.get("/api/v1/incidents?status=open", headers=viewer).json() == []

    assert_problem(
        http.post(f"/api/v1/incidents/{inc_id}/close", json={"resolution": "x"}, headers=admin),
        409,
        "closed already",
    )
    assert_problem(http.get("/api/v1/incidents/999", headers=viewer), 404, "No incident")
    assert_problem(
        http.post(f"/api/v1/incidents/{inc_id}/notes", json={"text": ""}, headers=admin), 422
    )
