"""Monthly maintenance: the system audit, a backup restore drill, the compliance audit."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psutil
from sqlalchemy import func, select

from sctk.ops.tasks import TaskContext, TaskResult, task
from sctk.storage.engine import session_scope
from sctk.storage.models import LoginAttempt, MetricAggregate, User


def sctk_listeners() -> list[dict]:
    """TCP ports this machine's sctk processes listen on (the service, workers, schedulers)."""
    ports = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "sctk" not in cmdline and proc.info["pid"] != os.getpid():
            continue
        try:
            conns = proc.net_connections(kind="inet")
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                ports.append({"pid": proc.info["pid"], "address": c.laddr.ip, "port": c.laddr.port})
    return ports


@task("system_audit", "monthly", "Resources, 30-day CPU/memory, users, failed logins, ports.")
def system_audit(ctx: TaskContext) -> TaskResult:
    since = datetime.now(UTC) - timedelta(days=30)
    averages = {}
    with session_scope(ctx.engine) as s:
        for metric in ("cpu_percent", "memory_percent"):
            # each aggregate is a minute's mean; weight by its sample count
            total, count = s.execute(
                select(
                    func.sum(MetricAggregate.avg * MetricAggregate.count),
                    func.sum(MetricAggregate.count),
                ).where(MetricAggregate.metric == metric, MetricAggregate.bucket_start >= since)
            ).one()
            averages[metric] = round(total / count, 2) if count else None
        accounts = [
            {
                "username": u.username,
                "role": u.role,
                "disabled": u.disabled,
                "last_login": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            for u in s.scalars(select(User).order_by(User.username))
        ]
        failed = s.scalar(
            select(func.count())
            .select_from(LoginAttempt)
            .where(LoginAttempt.success.is_(False), LoginAttempt.at >= since)
        )
    disk = psutil.disk_usage(str(ctx.settings.home))
    details = {
        "cpus": psutil.cpu_count(),
        "memory_total_bytes": psutil.virtual_memory().total,
        "disk_total_bytes": disk.total,
        "disk_used_percent": disk.percent,
        "avg_30d": averages,
        "users": accounts,
        "failed_logins_30d": failed,
        "listening": sctk_listeners(),
    }
    shown = ", ".join(
        f"{k.split('_')[0]} {v:g}%" if v is not None else f"{k.split('_')[0]} n/a"
        for k, v in averages.items()
    )
    return TaskResult(
        "ok",
        f"30-day average {shown}; {len(accounts)} users, {failed} failed logins, "
        f"{len(details['listening'])} listening port(s)",
        details,
    )


@task("restore_drill", "monthly", "Verify the latest backup: every byte, and a restore test.")
def restore_drill(ctx: TaskContext) -> TaskResult:
    """The newest regular backup not already found inconsistent (safety snapshots are not
    backups to fall back on); each newer one passed over is named in the summary."""
    from sctk.backup import kinds
    from sctk.backup.location import open_repo
    from sctk.backup.verify import verify_backup

    snap, skipped = kinds.newest_usable(open_repo(ctx.settings))
    if snap is None:
        message = " ".join([*skipped, "No regular backup is left to drill; take a backup."])
        return TaskResult("fail", message, {"skipped": skipped})
    result = verify_backup(ctx.runtime, snap.id, read_data=True, restore_test=True, actor=ctx.actor)
    status = "fail" if not result["ok"] else ("warn" if skipped else "ok")
    return TaskResult(
        status, " ".join([*skipped, result["message"]]), {**result, "skipped": skipped}
    )


@task("compliance_audit", "monthly", "Score the compliance audit and keep its report.")
def compliance_audit(ctx: TaskContext) -> TaskResult:
    from sctk.ops import compliance

    report = compliance.run_audit(ctx.runtime)
    path = compliance.save(ctx.settings, report, "html")
    status, line = compliance.summary(report)
    return TaskResult(status, line, compliance.details(ctx.settings, report, path))


@task("ops_report", "monthly", "Write the month's operations report (and the year's in January).")
def ops_report(ctx: TaskContext) -> TaskResult:
    """The reports go to reports/; a summary of each goes out over the configured notifiers
    (webhook, e-mail) so that the people who read them are told where they are."""
    from sctk.ops import reports

    written, sent = [], []
    periods = ["month"] + (["year"] if datetime.now(UTC).month == 1 else [])
    for period in periods:
        built = reports.build(ctx.settings, period)
        path = reports.write(ctx.settings, built, "html")
        written.append(str(path))
        sent += _announce(ctx, period, reports.summary_text(built), path)
    summary = f"wrote {', '.join(written)}" + (
        f"; sent over {', '.join(sorted(set(sent)))}" if sent else ""
    )
    return TaskResult("ok", summary, {"reports": written, "sent_over": sorted(set(sent))})


def _announce(ctx: TaskContext, period: str, text: str, path) -> list[str]:
    from sctk.monitoring import notifiers
    from sctk.security.keyring import Keyring

    if not set(ctx.settings.alerts.channels) - {"log"}:
        return []
    note = notifiers.Notification(
        kind="report",
        title=f"sctk {period} operations report",
        severity="info",
        text=f"{text}\nThe full report: {path}",
    )
    with session_scope(ctx.engine) as s:
        attempts = notifiers.broadcast(
            note, ctx.settings.alerts, s, Keyring.load(ctx.settings.home)
        )
    return [a.channel for a in attempts if a.ok and a.channel != "log"]
