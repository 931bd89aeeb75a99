"""Operations reports: what happened over a month, a quarter or a year, for an auditor or a
continuity review. Availability (from the health-check history), incidents and their
durations, alerts by rule, backups taken and verified, restore drills with RTO/RPO,
maintenance results, the compliance score and model coverage over time, with plots.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from sctk.config import Settings
from sctk.errors import SctkError
from sctk.fsutil import atomic_write
from sctk.plots import figure, png_bytes
from sctk.storage.engine import one_off_session
from sctk.storage.models import (
    Alert,
    BackupRun,
    CheckResult,
    Incident,
    MaintenanceRun,
    UqModel,
)

PERIODS = {"month": 30, "quarter": 91, "year": 365}
FORMATS = ("html", "md", "json")


@dataclass
class OpsReport:
    period: str
    start: datetime
    end: datetime
    sections: dict[str, Any] = field(default_factory=dict)
    series: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            **self.sections,
            "series": self.series,
        }


def _day(t: datetime) -> str:
    return t.astimezone(UTC).date().isoformat()


def _availability(s, start: datetime) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    """A health round is the set of check results stored together; it is 'up' when none of
    them is CRITICAL. Availability is the share of rounds that were up."""
    rounds: dict[datetime, bool] = {}
    for checked_at, status in s.execute(
        select(CheckResult.checked_at, CheckResult.status).where(CheckResult.checked_at >= start)
    ):
        rounds[checked_at] = rounds.get(checked_at, True) and status != "CRITICAL"
    by_day: dict[str, list[bool]] = defaultdict(list)
    for at, up in rounds.items():
        by_day[_day(at)].append(up)
    daily = [(d, 100.0 * sum(v) / len(v)) for d, v in sorted(by_day.items())]
    total = len(rounds)
    share = 100.0 * sum(rounds.values()) / total if total else None
    return {"availability_percent": share, "health_rounds": total}, daily


def _incidents(s, start: datetime, end: datetime) -> dict[str, Any]:
    rows = list(s.scalars(select(Incident).where(Incident.opened_at >= start)))
    durations = [((i.closed_at or end) - i.opened_at).total_seconds() / 3600 for i in rows]
    return {
        "incidents": len(rows),
        "incidents_open": sum(i.status == "open" for i in rows),
        "incident_hours_total": round(sum(durations), 2),
        "incident_hours_longest": round(max(durations, default=0.0), 2),
        "incident_list": [
            {
                "id": i.id,
                "title": i.title,
                "severity": i.severity,
                "opened": i.opened_at.isoformat(),
                "hours": round(d, 2),
                "resolution": i.resolution,
            }
            for i, d in zip(rows, durations, strict=True)
        ],
    }


def _alerts(s, start: datetime) -> dict[str, Any]:
    rules = Counter(a.rule for a in s.scalars(select(Alert).where(Alert.started_at >= start)))
    return {"alerts": sum(rules.values()), "alerts_by_rule": dict(rules.most_common())}


def _backups(s, start: datetime) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    runs = list(s.scalars(select(BackupRun).where(BackupRun.started_at >= start)))
    ok = [r for r in runs if r.status == "succeeded"]
    per_day = Counter(_day(r.started_at) for r in ok if r.kind == "create")
    return {
        "backups_taken": sum(r.kind == "create" for r in ok),
        "backups_failed": sum(r.kind == "create" and r.status == "failed" for r in runs),
        "backups_verified": sum(r.kind == "verify" for r in ok),
    }, sorted((d, float(n)) for d, n in per_day.items())


def _maintenance(s, start: datetime) -> dict[str, Any]:
    runs = list(s.scalars(select(MaintenanceRun).where(MaintenanceRun.started_at >= start)))
    by_task: dict[str, Counter] = defaultdict(Counter)
    for r in runs:
        by_task[r.task][r.status] += 1
    drills = [
        {
            "at": r.started_at.isoformat(),
            "rto_seconds": r.details.get("rto_seconds"),
            "rpo_seconds": r.details.get("rpo_seconds"),
            "status": r.status,
        }
        for r in runs
        if r.task == "dr_drill" and r.status != "running"
    ]
    scores = [
        (_day(r.started_at), float(r.details["score"]))
        for r in runs
        if r.task == "compliance_audit" and r.details.get("score") is not None
    ]
    return {
        "maintenance": {t: dict(c) for t, c in sorted(by_task.items())},
        "restore_drills": drills,
        "audit_scores": scores,
    }


def _coverage(s, start: datetime) -> list[tuple[str, float]]:
    points = []
    for m in s.scalars(select(UqModel).where(UqModel.created_at >= start).order_by(UqModel.id)):
        cov = (m.metrics or {}).get("coverage")
        if cov is not None:
            points.append((_day(m.created_at), float(cov)))
    return points


def build(settings: Settings, period: str, end: datetime | None = None) -> OpsReport:
    if period not in PERIODS:
        raise SctkError(f"Unknown period '{period}'; use one of {', '.join(PERIODS)}.")
    end = end or datetime.now(UTC)
    start = end - timedelta(days=PERIODS[period])
    report = OpsReport(period, start, end)
    with one_off_session(settings) as s:
        availability, daily = _availability(s, start)
        backups, per_day = _backups(s, start)
        maintenance = _maintenance(s, start)
        report.sections = {
            **availability,
            **_incidents(s, start, end),
            **_alerts(s, start),
            **backups,
            **maintenance,
        }
        report.series = {
            "availability": daily,
            "backups per day": per_day,
            "audit score": maintenance["audit_scores"],
            "model coverage": _coverage(s, start),
        }
    return report


def chart(name: str, points: list[tuple[str, float]], start: datetime, end: datetime):
    """The figure of one daily series over the report's period, START to END."""
    import numpy as np
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    fig = figure()
    ax = fig.add_subplot()
    days = np.array([datetime.fromisoformat(d) for d, _ in points], dtype="datetime64[D]")
    ax.plot(days, [v for _, v in points], marker="." if len(points) < 60 else None)
    # the period, whatever the data: left alone, matplotlib widens a lone day to four years
    # and fits the axis to the data, so a quiet stretch would not show
    span = [np.datetime64(_day(start), "D"), np.datetime64(_day(end), "D") + 1]
    ax.set_xlim(*span)
    locator = AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_title(name)
    ax.grid(alpha=0.3)
    return fig


def plot(
    name: str, points: list[tuple[str, float]], start: datetime, end: datetime
) -> bytes | None:
    """PNG bytes of chart(), or None when there is no point to draw."""
    if not points:
        return None
    return png_bytes(chart(name, points, start, end))


def _summary_rows(r: OpsReport) -> list[tuple[str, str]]:
    s = r.sections
    avail = s["availability_percent"]
    drills = s["restore_drills"]
    last = drills[-1] if drills else None
    return [
        (
            "availability",
            f"{avail:.2f}% of {s['health_rounds']} health rounds"
            if avail is not None
            else "no health history",
        ),
        (
            "incidents",
            f"{s['incidents']} ({s['incidents_open']} open), "
            f"{s['incident_hours_total']:g} h in all, longest {s['incident_hours_longest']:g} h",
        ),
        ("alerts", ", ".join(f"{k}: {v}" for k, v in s["alerts_by_rule"].items()) or "none"),
        (
            "backups",
            f"{s['backups_taken']} taken, {s['backups_failed']} failed, "
            f"{s['backups_verified']} verified",
        ),
        (
            "restore drills",
            f"{len(drills)}; last RTO {last['rto_seconds']} s, RPO {last['rpo_seconds']} s"
            if last
            else "none",
        ),
        ("compliance score", ", ".join(f"{d}: {v:g}" for d, v in s["audit_scores"][-3:]) or "none"),
    ]


def summary_text(report: OpsReport) -> str:
    """The report's headline figures as plain lines, for a notification."""
    return "\n".join(f"{k}: {v}" for k, v in _summary_rows(report))


def render(report: OpsReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.as_dict(), indent=2, default=str)
    title = f"sctk operations report: {report.period} to {report.end:%Y-%m-%d}"
    rows = _summary_rows(report)
    if fmt == "md":
        lines = [
            f"# {title}",
            "",
            f"From {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d}.",
            "",
            "| | |",
            "| --- | --- |",
            *[f"| {k} | {v} |" for k, v in rows],
            "",
            "## Maintenance",
            "",
            "| task | ok | warn | fail |",
            "| --- | ---: | ---: | ---: |",
        ]
        for task, c in report.sections["maintenance"].items():
            lines.append(f"| {task} | {c.get('ok', 0)} | {c.get('warn', 0)} | {c.get('fail', 0)} |")
        return "\n".join(lines) + "\n"
    if fmt == "html":
        images = []
        for name, points in report.series.items():
            png = plot(name, points, report.start, report.end)
            if png is not None:
                data = base64.b64encode(png).decode("ascii")
                images.append(
                    f"<figure><img alt='{html.escape(name)}' "
                    f"src='data:image/png;base64,{data}'><figcaption>"
                    f"{html.escape(name)}</figcaption></figure>"
                )
        table = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
        )
        maint = "".join(
            f"<tr><td>{html.escape(t)}</td><td>{c.get('ok', 0)}</td><td>{c.get('warn', 0)}</td>"
            f"<td>{c.get('fail', 0)}</td></tr>"
            for t, c in report.sections["maintenance"].items()
        )
        return (
            "<!doctype html><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
            "th{text-align:left}td,th{padding:3px 8px}figure{margin:1em 0}"
            "img{max-width:100%;height:auto}</style>"
            f"<h1>{html.escape(title)}</h1><table>{table}</table>"
            "<h2>Maintenance</h2><table><tr><th>task</th><th>ok</th><th>warn</th><th>fail</th>"
            f"</tr>{maint}</table><h2>Over time</h2>{''.join(images)}"
        )
    raise SctkError(f"Unknown format '{fmt}'; use one of {', '.join(FORMATS)}.")


def write(settings: Settings, report: OpsReport, fmt: str) -> Path:
    path = settings.home / "reports" / f"ops-{report.period}-{report.end:%Y%m%d}.{fmt}"
    atomic_write(path, render(report, fmt), mode=0o640)
    return path
