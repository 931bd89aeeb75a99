"""Notification channels (webhook, e-mail, log) and the dispatcher that delivers to them.

Each channel has a queue and a worker thread of its own: the alert engine only enqueues, so a
webhook that hangs until its timeout, or an SMTP server that refuses connections, delays
neither the other channels nor the evaluation of alerts. A failed delivery is retried with
doubling backoff up to `alerts.max_attempts`; every attempt (ok or not) is recorded in the
`notifications` table.

The webhook URL (it usually embeds a token) and the SMTP password are stored encrypted in the
`secrets` table (see sctk.security.secrets), never in sctk.toml: `sctk alerts set-webhook`
and `sctk alerts set-smtp-password` put them there.
"""

from __future__ import annotations

import logging
import queue
import smtplib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from sctk.errors import SctkError
from sctk.monitoring.rules import AlertSettings, SmtpSettings

log = logging.getLogger("sctk.alerts")

WEBHOOK_SECRET = "alerts.webhook_url"
SMTP_PASSWORD_SECRET = "alerts.smtp_password"
CHANNELS = ("log", "webhook", "email")
KINDS = ("firing", "reminder", "resolved", "test")
_COLOURS = {"critical": "#d00000", "warning": "#e6a000", "resolved": "#2eb67d", "info": "#439fe0"}


@dataclass(frozen=True)
class Notification:
    """What one alert transition says, independent of the channel that carries it."""

    kind: str  # firing / reminder / resolved / test
    title: str
    text: str
    severity: str = "info"
    alert_id: int | None = None
    fingerprint: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        tag = "RESOLVED" if self.kind == "resolved" else self.severity.upper()
        prefix = {"reminder": "still firing: ", "test": "test: "}.get(self.kind, "")
        return f"[{tag}] {prefix}{self.title}"


class DeliveryError(Exception):
    """A delivery that failed; the message is one sentence naming the cause and the fix."""


class Channel(Protocol):
    name: str

    def send(self, note: Notification) -> None:
        """Deliver NOTE or raise DeliveryError (within the channel's own timeout)."""
        ...


class LogChannel:
    """Writes the notification to sctk's structured log."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None):
        self.logger = logger or log

    def send(self, note: Notification) -> None:
        level = logging.INFO if note.kind in ("resolved", "test") else logging.WARNING
        self.logger.log(
            level,
            "%s: %s",
            note.headline,
            note.text,
            extra={
                "alert_id": note.alert_id,
                "fingerprint": note.fingerprint,
                "kind": note.kind,
                "severity": note.severity,
            },
        )


def slack_payload(note: Notification) -> dict[str, Any]:
    """Slack-compatible JSON: `text` for any receiver, an attachment with the details."""
    colour = _COLOURS["resolved"] if note.kind == "resolved" else _COLOURS.get(note.severity)
    fields = [{"title": k, "value": str(v), "short": True} for k, v in note.fields.items()]
    return {
        "text": f"{note.headline}: {note.text}",
        "attachments": [
            {
                "color": colour or _COLOURS["info"],
                "title": note.title,
                "text": note.text,
                "fields": fields,
                "footer": f"sctk {note.kind}"
                + (f" · alert {note.alert_id}" if note.alert_id else ""),
                "ts": int(datetime.now(UTC).timestamp()),
            }
        ],
    }


def _where(url: str) -> str:
    """The host of a webhook URL: the rest (path, query) often holds a token."""
    parts = urlsplit(url)
    return parts.hostname or "the webhook host"


def check_webhook_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SctkError(
            "That is not a webhook URL; give an http:// or https:// address such as "
            "https://hooks.example.org/services/T000/B000/XXXX."
        )
    return url


class WebhookChannel:
    """POSTs Slack-compatible JSON to a URL, with a bounded timeout."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = check_webhook_url(url)
        self.timeout = timeout

    def send(self, note: Notification) -> None:
        where = _where(self.url)
        try:
            response = httpx.post(
                self.url, json=slack_payload(note), timeout=httpx.Timeout(self.timeout)
            )
        except httpx.TimeoutException:
            raise DeliveryError(
                f"The webhook at {where} did not answer within {self.timeout:g} s; check that "
                "it is up, or raise alerts.webhook_timeout_seconds."
            ) from None
        except httpx.HTTPError as exc:
            raise DeliveryError(
                f"The webhook at {where} could not be reached ({exc}); check the URL set with "
                "'sctk alerts set-webhook'."
            ) from None
        if response.status_code >= 300:
            raise DeliveryError(
                f"The webhook at {where} answered HTTP {response.status_code}; check the URL "
                "set with 'sctk alerts set-webhook' and the receiver's logs."
            )


class EmailChannel:
    """Sends a plain-text e-mail over SMTP (optionally STARTTLS and login)."""

    name = "email"

    def __init__(self, smtp: SmtpSettings, password: str | None = None):
        if not smtp.host:
            raise SctkError(
                "The e-mail channel has no SMTP server; set alerts.smtp.host "
                "(sctk config set alerts.smtp.host HOST)."
            )
        if not smtp.to:
            raise SctkError(
                "The e-mail channel has no recipients; set alerts.smtp.to to a list of addresses."
            )
        self.smtp = smtp
        self.password = password

    def message(self, note: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = note.headline
        msg["From"] = self.smtp.sender
        msg["To"] = ", ".join(self.smtp.to)
        lines = [note.text, ""] + [f"{k}: {v}" for k, v in note.fields.items()]
        msg.set_content("\n".join(lines))
        return msg

    def send(self, note: Notification) -> None:
        s = self.smtp
        where = f"{s.host}:{s.port}"
        try:
            with smtplib.SMTP(s.host, s.port, timeout=s.timeout_seconds) as client:
                if s.starttls:
                    client.starttls()
                if s.username:
                    client.login(s.username, self.password or "")
                client.send_message(self.message(note))
        except TimeoutError:
            raise DeliveryError(
                f"The SMTP server {where} did not answer within {s.timeout_seconds:g} s; check "
                "alerts.smtp.host and alerts.smtp.port."
            ) from None
        except smtplib.SMTPAuthenticationError:
            raise DeliveryError(
                f"The SMTP server {where} refused the login of '{s.username}'; set the right "
                "password with 'sctk alerts set-smtp-password'."
            ) from None
        except smtplib.SMTPException as exc:
            raise DeliveryError(
                f"The SMTP server {where} refused the message ({exc}); check alerts.smtp.sender "
                "and alerts.smtp.to."
            ) from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise DeliveryError(
                f"The SMTP server {where} could not be reached ({reason}); check "
                "alerts.smtp.host and alerts.smtp.port."
            ) from None


# -- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as recorded."""

    channel: str
    kind: str
    alert_id: int | None
    attempt: int
    ok: bool
    error: str | None
    at: datetime
    duration_ms: float


Recorder = Callable[[Attempt], None]


def db_recorder(sessionmaker) -> Recorder:
    """Record attempts in the notifications table, each in a short transaction of its own."""
    from sctk.storage.models import NotificationAttempt

    def record(a: Attempt) -> None:
        try:
            with sessionmaker() as session:
                session.add(
                    NotificationAttempt(
                        alert_id=a.alert_id,
                        kind=a.kind,
                        channel=a.channel,
                        attempt=a.attempt,
                        ok=a.ok,
                        error=a.error,
                        at=a.at,
                        duration_ms=a.duration_ms,
                    )
                )
                session.commit()
        except Exception:  # a database hiccup must not kill the channel's worker
            log.exception("could not record a notification attempt on %s", a.channel)

    return record


def deliver(
    channel: Channel,
    note: Notification,
    *,
    max_attempts: int = 1,
    backoff_seconds: float = 0.0,
    record: Recorder | None = None,
    stop: threading.Event | None = None,
    log_failures: bool = True,
) -> list[Attempt]:
    """Send NOTE over CHANNEL, retrying with doubling backoff; every attempt is recorded."""
    attempts: list[Attempt] = []
    for n in range(1, max_attempts + 1):
        start = time.perf_counter()
        at = datetime.now(UTC)
        error = None
        try:
            channel.send(note)
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # a channel bug is a failed attempt, not a dead worker
            error = f"{type(exc).__name__}: {exc}"
        result = Attempt(
            channel.name,
            note.kind,
            note.alert_id,
            n,
            error is None,
            error,
            at,
            (time.perf_counter() - start) * 1000.0,
        )
        attempts.append(result)
        if record is not None:
            record(result)
        if error is None:
            return attempts
        if log_failures:
            log.warning("notification over %s failed (attempt %d): %s", channel.name, n, error)
        if n < max_attempts:
            delay = backoff_seconds * 2 ** (n - 1)
            if stop is not None:
                if stop.wait(delay):
                    break
            else:
                time.sleep(delay)
    return attempts


class Dispatcher:
    """One queue and one worker thread per channel; `submit` never blocks on delivery."""

    def __init__(
        self,
        channels: list[Channel],
        *,
        record: Recorder | None = None,
        max_attempts: int = 4,
        backoff_seconds: float = 2.0,
    ):
        self.channels = list(channels)
        self.record = record
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self._stop = threading.Event()
        self._queues: dict[str, queue.Queue[Notification | None]] = {}
        self._threads: list[threading.Thread] = []
        for channel in self.channels:
            q: queue.Queue[Notification | None] = queue.Queue()
            self._queues[channel.name] = q
            t = threading.Thread(
                target=self._run, args=(channel, q), name=f"sctk-notify-{channel.name}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def _run(self, channel: Channel, q: queue.Queue[Notification | None]) -> None:
        while True:
            note = q.get()
            try:
                if note is None:
                    return
                if not self._stop.is_set():
                    deliver(
                        channel,
                        note,
                        max_attempts=self.max_attempts,
                        backoff_seconds=self.backoff_seconds,
                        record=self.record,
                        stop=self._stop,
                    )
            finally:
                q.task_done()

    def submit(self, note: Notification) -> None:
        for q in self._queues.values():
            q.put(note)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until every queued notification was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(q.unfinished_tasks == 0 for q in self._queues.values()):
                return True
            time.sleep(0.01)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Stop retrying and end the workers (a send in progress ends at its own timeout)."""
        self._stop.set()
        for q in self._queues.values():
            q.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


# -- building the configured channels ---------------------------------------------------------


def _secret(session, ring, name: str) -> str | None:
    from sctk.errors import NotFound
    from sctk.security.secrets import get_secret

    try:
        return get_secret(session, ring, name)
    except NotFound:
        return None


def build_channel(name: str, alerts: AlertSettings, session, ring) -> Channel:
    """The channel NAME as configured; SctkError naming what to set when it is not."""
    if name == "log":
        return LogChannel()
    if name == "webhook":
        url = _secret(session, ring, WEBHOOK_SECRET)
        if not url:
            raise SctkError(
                "The webhook channel has no URL; set one with 'sctk alerts set-webhook' "
                "(it asks for the URL)."
            )
        return WebhookChannel(url, alerts.webhook_timeout_seconds)
    if name == "email":
        return EmailChannel(alerts.smtp, _secret(session, ring, SMTP_PASSWORD_SECRET))
    raise SctkError(f"Unknown channel '{name[:40]}'; choose one of: {', '.join(CHANNELS)}.")


def configured_channels(alerts: AlertSettings, session, ring) -> list[Channel]:
    """The enabled channels that are configured (webhook with a URL, email with a host)."""
    out: list[Channel] = []
    for name in dict.fromkeys(alerts.channels):
        try:
            out.append(build_channel(name, alerts, session, ring))
        except SctkError as exc:
            if name == "log":
                raise
            log.info("alert channel %s not used: %s", name, exc.message)
    return out


def set_webhook(session, ring, url: str, actor: str) -> None:
    """Store the webhook URL encrypted; audited without the URL itself."""
    from sctk.security import audit_log
    from sctk.security.secrets import put_secret

    url = check_webhook_url(url)
    put_secret(session, ring, WEBHOOK_SECRET, url)
    audit_log.record(
        session, "alerts.webhook_set", actor=actor, target="webhook", details={"host": _where(url)}
    )


def set_smtp_password(session, ring, password: str, actor: str) -> None:
    """Store the SMTP password encrypted; audited without the password."""
    from sctk.security import audit_log
    from sctk.security.secrets import put_secret

    if not password:
        raise SctkError("The SMTP password is empty; type the password the SMTP server expects.")
    put_secret(session, ring, SMTP_PASSWORD_SECRET, password)
    audit_log.record(session, "alerts.smtp_password_set", actor=actor, target="email")


def test_notification() -> Notification:
    return Notification(
        kind="test",
        title="sctk test notification",
        text="If you can read this, sctk alerts reach you over this channel.",
        severity="info",
    )


def test_notify(
    name: str, alerts: AlertSettings, session, ring, record: Recorder | None
) -> Attempt:
    """Send a test message over one channel, once; DeliveryError becomes SctkError."""
    channel = build_channel(name, alerts, session, ring)
    # the caller reports the failure itself: no log line besides it
    (attempt,) = deliver(
        channel, test_notification(), max_attempts=1, record=record, log_failures=False
    )
    if not attempt.ok:
        raise SctkError(attempt.error or f"The {name} channel failed.")
    return attempt


def broadcast(
    note: Notification,
    alerts: AlertSettings,
    session,
    ring,
    record: Recorder | None = None,
    timeout: float = 60.0,
) -> list[Attempt]:
    """Send NOTE over every configured channel at once (each on its own thread, with the
    usual retries) and wait up to TIMEOUT; the attempts made. For one-off notices such as
    `sctk emergency`'s 'notify' step."""
    made: list[Attempt] = []
    lock = threading.Lock()

    def keep(attempt: Attempt) -> None:
        with lock:
            made.append(attempt)
        if record is not None:
            record(attempt)

    dispatcher = Dispatcher(
        configured_channels(alerts, session, ring),
        record=keep,
        max_attempts=alerts.max_attempts,
        backoff_seconds=alerts.backoff_seconds,
    )
    try:
        dispatcher.submit(note)
        dispatcher.drain(timeout)
    finally:
        dispatcher.stop(timeout=1.0)
    with lock:
        return list(made)


def endpoints(alerts: AlertSettings, session, ring) -> list[tuple[str, str, int]]:
    """(channel, host, port) of each configured remote channel, for connectivity checks;
    never the webhook's path or query (they may hold a token)."""
    out: list[tuple[str, str, int]] = []
    if "webhook" in alerts.channels:
        url = _secret(session, ring, WEBHOOK_SECRET)
        if url:
            parts = urlsplit(url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            out.append(("webhook", parts.hostname or "", port))
    if "email" in alerts.channels and alerts.smtp.host:
        out.append(("email", alerts.smtp.host, alerts.smtp.port))
    return out
