"""`sctk alerts list|ack|silence|silences|history|test-notify|set-webhook|set-smtp-password`."""

from __future__ import annotations

from pathlib import Path

import typer

from sctk.cli import secret_input
from sctk.cli.common import (
    console,
    db_session,
    json_option,
    operator,
    print_json,
    settings,
    table,
    when,
)

app = typer.Typer(
    help="Alerts: list, acknowledge, silence, history; notification channels.",
    no_args_is_help=True,
)


def _plain(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Resolved alerts too, not only firing ones."),
    limit: int = typer.Option(200, "--limit", min=1, max=10_000, help="At most this many."),
    as_json: bool = json_option(),
) -> None:
    """Firing alerts (with --all, resolved ones too), newest first."""
    from sctk.monitoring import alerts

    with db_session(ctx) as session:
        rows = alerts.describe(session, alerts.list_alerts(session, all_, limit))
    if as_json:
        print_json(rows)
        return
    if not rows:
        _plain("no firing alerts" if not all_ else "no alerts")
        return
    table(
        None,
        ["id", "severity", "status", "rule", "message", "since", "ack", "silenced until", "fp"],
        [
            [
                a["id"],
                a["severity"],
                a["status"],
                a["rule"],
                a["message"],
                when(a["started_at"]),
                a["acknowledged_by"] or "",
                when(a["silenced_until"]),
                a["fingerprint"],
            ]
            for a in rows
        ],
    )


@app.command("ack")
def ack(
    ctx: typer.Context,
    alert_id: int = typer.Argument(..., help="Id from 'sctk alerts list'."),
    as_json: bool = json_option(),
) -> None:
    """Acknowledge a firing alert: no more reminders (its resolution is still announced)."""
    from sctk.monitoring import alerts

    with db_session(ctx) as session:
        data = alerts.as_dict(alerts.acknowledge(session, alert_id, operator()))
    if as_json:
        print_json(data)
        return
    _plain(f"alert {alert_id} acknowledged by {data['acknowledged_by']}")


@app.command("silence")
def silence(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="An alert id or a fingerprint."),
    until: str | None = typer.Option(None, "--until", help="End, ISO 8601 (UTC if no zone)."),
    for_: str | None = typer.Option(None, "--for", help="Duration instead: 30m, 2h, 1d."),
    reason: str = typer.Option("", "--reason", help="Why (kept with the silence)."),
    as_json: bool = json_option(),
) -> None:
    """Send nothing for a fingerprint (the alert's, and any that fire later) until a time."""
    from sctk.monitoring import alerts

    end = alerts.parse_until(until) if until is not None else None
    duration = alerts.parse_duration(for_) if for_ is not None else None
    with db_session(ctx) as session:
        row = alerts.silence(
            session, target, until=end, duration=duration, reason=reason, actor=operator()
        )
        data = alerts.silence_dict(row)
    if as_json:
        print_json(data)
        return
    _plain(f"fingerprint {data['fingerprint']} silenced until {when(data['ends_at'])} UTC")


@app.command("silences")
def silences(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", help="Expired silences too."),
    as_json: bool = json_option(),
) -> None:
    """Active silences (with --all, expired ones too)."""
    from sctk.monitoring import alerts

    with db_session(ctx) as session:
        rows = [alerts.silence_dict(s) for s in alerts.list_silences(session, None, all_)]
    if as_json:
        print_json(rows)
        return
    table(
        None,
        ["id", "fingerprint", "from", "until", "by", "reason"],
        [
            [s["id"], s["fingerprint"], when(s["starts_at"]), when(s["ends_at"]),
             s["created_by"], s["reason"]]
            for s in rows
        ],
    )  # fmt: skip


@app.command("history")
def history(
    ctx: typer.Context,
    alert_id: int | None = typer.Option(None, "--alert", help="Only this alert's events."),
    limit: int = typer.Option(200, "--limit", min=1, max=10_000, help="At most this many."),
    as_json: bool = json_option(),
) -> None:
    """Alert events, newest first: fired, notified, suppressed, acknowledged, resolved."""
    from sctk.monitoring import alerts

    with db_session(ctx) as session:
        rows = [alerts.event_dict(e) for e in alerts.history(session, alert_id, limit)]
    if as_json:
        print_json(rows)
        return
    table(
        None,
        ["at", "alert", "event", "by", "details"],
        [
            [
                when(e["at"]),
                e["alert_id"],
                e["kind"],
                e["actor"],
                ", ".join(f"{k}={v}" for k, v in e["details"].items()),
            ]
            for e in rows
        ],
    )


@app.command("test-notify")
def test_notify(
    ctx: typer.Context,
    channel: str = typer.Argument(..., help="log, webhook or email."),
    as_json: bool = json_option(),
) -> None:
    """Send a test message over one channel; the failure sentence and exit 1 when it fails."""
    from sqlalchemy.orm import sessionmaker

    from sctk.monitoring import notifiers
    from sctk.security.keyring import Keyring

    s = settings(ctx)
    with db_session(ctx) as session:
        ring = Keyring.load(s.home)
        record = notifiers.db_recorder(sessionmaker(session.get_bind(), expire_on_commit=False))
        attempt = notifiers.test_notify(channel, s.alerts, session, ring, record)
    if as_json:
        print_json({"channel": attempt.channel, "ok": True, "ms": round(attempt.duration_ms, 1)})
        return
    _plain(f"test message sent over {attempt.channel} in {attempt.duration_ms:.0f} ms")


@app.command("set-webhook")
def set_webhook(
    ctx: typer.Context,
    url_on_argv: str | None = typer.Argument(None, hidden=True),
    url_stdin: bool = secret_input.stdin_option("--url-stdin", "webhook URL"),
    url_file: Path | None = secret_input.file_option("--url-file", "webhook URL"),
) -> None:
    """Store the webhook URL (Slack-compatible; it holds a token), encrypted by the keyring;
    asked for, or read with --url-stdin/--url-file. 'test-notify webhook' tries it."""
    from sctk.monitoring import notifiers
    from sctk.security.keyring import Keyring

    if url_on_argv is not None:
        raise secret_input.refused_on_argv("webhook URL", "--url")
    url = secret_input.read_secret(
        "webhook URL", "--url", from_stdin=url_stdin, from_file=url_file, confirm=False
    )
    s = settings(ctx)
    with db_session(ctx) as session:
        notifiers.set_webhook(session, Keyring.load(s.home), url, operator())
    _plain("webhook URL stored (encrypted); try it with 'sctk alerts test-notify webhook'")


@app.command("set-smtp-password")
def set_smtp_password(
    ctx: typer.Context,
    password_on_argv: str | None = typer.Option(None, "--password", hidden=True),
    password_stdin: bool = secret_input.stdin_option("--password-stdin", "SMTP password"),
    password_file: Path | None = secret_input.file_option("--password-file", "SMTP password"),
) -> None:
    """Store the SMTP login's password, encrypted by the keyring; asked for, or read with
    --password-stdin/--password-file."""
    from sctk.monitoring import notifiers
    from sctk.security.keyring import Keyring

    if password_on_argv is not None:
        raise secret_input.refused_on_argv("SMTP password", "--password")
    password = secret_input.read_secret(
        "SMTP password",
        "--password",
        from_stdin=password_stdin,
        from_file=password_file,
        confirm=False,
    )
    s = settings(ctx)
    with db_session(ctx) as session:
        notifiers.set_smtp_password(session, Keyring.load(s.home), password, operator())
    _plain("SMTP password stored (encrypted); try it with 'sctk alerts test-notify email'")
