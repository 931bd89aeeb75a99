"""Notification channels against real servers: an HTTP server for the webhook (one that
answers, one that fails, one that never answers) and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from sctk.errors import SctkError
from sctk.monitoring.alert_engine import AlertEngine
from sctk.monitoring.clock import ManualClock
from sctk.monitoring.notifiers import (
    WEBHOOK_SECRET,
    Dispatcher,
    EmailChannel,
    LogChannel,
    Notification,
    WebhookChannel,
    db_recorder,
    deliver,
)
from sctk.monitoring.rules import AlertSettings, SmtpSettings, ThresholdRule
from sctk.storage.engine import make_engine, session_scope
from sctk.storage.models import NotificationAttempt, Secret
from tests.helpers import free_port, run_sctk, wait_until

sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


# -- real servers -----------------------------------------------------------------------------


class Webhook:
    """A real HTTP server recording JSON bodies; it answers with the statuses queued."""

    def __init__(self, statuses: list[int] | None = None):
        self.bodies: list[dict] = []
        self.statuses = list(statuses or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server's naming
                length = int(self.headers.get("content-length", 0))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                code = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(code)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/B0/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class HangingServer:
    """Accepts TCP connections and never answers (a webhook that hangs)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.conns: list[socket.socket] = []
        self.stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)  # held open, never read from or written to
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


class Mailbox:
    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's naming
        self.messages.append((time.monotonic(), envelope))
        return "250 Message accepted for delivery"

    def __init__(self):
        self.messages: list = []


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


@pytest.fixture
def hanging() -> Iterator[HangingServer]:
    server = HangingServer()
    yield server
    server.close()


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def sessions(settings) -> Iterator[sessionmaker]:
    engine = make_engine(settings)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


def attempts(sessions) -> list[NotificationAttempt]:
    with sessions() as s:
        return list(s.scalars(select(NotificationAttempt).order_by(NotificationAttempt.id)))


NOTE = Notification(
    kind="firing",
    title="cpu_percent (critical)",
    text="cpu_percent is 97.0, > the critical level 90",
    severity="critical",
    alert_id=7,
    fingerprint="0123456789abcdef",
    fields={"metric": "cpu_percent", "value": 97.0},
)


# -- the tests --------------------------------------------------------------------------------


@sqlite_only
def test_the_webhook_receives_slack_compatible_json_from_the_engine(webhook, sessions):
    cfg = AlertSettings(
        rules=[ThresholdRule(metric="cpu_percent", warning=70, critical=90, for_seconds=0)],
        trend_rules=[],
    )
    dispatcher = Dispatcher(
        [WebhookChannel(webhook.url, timeout=5)], record=db_recorder(sessions), max_attempts=1
    )
    clock = ManualClock()
    engine = AlertEngine(cfg, sessions, dispatcher, clock=clock)
    try:
        engine.observe(clock.advance(1), {"cpu_percent": 97.0})
        wait_until(lambda: webhook.bodies, timeout=10, what="the webhook request")
    finally:
        dispatcher.stop()
    (body,) = webhook.bodies
    assert body["text"].startswith("[CRITICAL] cpu_percent (critical): cpu_percent is 97.0")
    (attachment,) = body["attachments"]
    assert attachment["color"] == "#d00000"
    assert {f["title"]: f["value"] for f in attachment["fields"]}["value"] == "97.0"
    (attempt,) = attempts(sessions)
    assert (attempt.channel, attempt.kind, attempt.ok, attempt.attempt) == (
        "webhook",
        "firing",
        True,
        1,
    )


@sqlite_only
def test_a_hanging_webhook_does_not_delay_email_or_the_engine(hanging, smtp, sessions):
    box, port = smtp
    timeout = 3.0
    email = EmailChannel(
        SmtpSettings(host="127.0.0.1", port=port, to=["ops@example.org"], timeout_seconds=5)
    )
    dispatcher = Dispatcher(
        [WebhookChannel(hanging.url, timeout=timeout), email],
        record=db_recorder(sessions),
        max_attempts=1,
    )
    cfg = AlertSettings(
        rules=[ThresholdRule(metric="cpu_percent", warning=70, for_seconds=0)], trend_rules=[]
    )
    clock = ManualClock()
    engine = AlertEngine(cfg, sessions, dispatcher, clock=clock)
    try:
        start = time.monotonic()
        engine.observe(clock.advance(1), {"cpu_percent": 80.0})
        observed = time.monotonic() - start
        wait_until(lambda: box.messages, timeout=10, what="the e-mail")
        mailed = box.messages[0][0] - start
        assert dispatcher.drain(timeout + 5)
        finished = time.monotonic() - start
    finally:
        dispatcher.stop()
    assert observed < 1.0, f"observe waited {observed:.2f} s for delivery"
    assert mailed < 1.5, f"the e-mail took {mailed:.2f} s behind a hanging webhook"
    assert finished >= timeout  # the webhook really hung until its timeout

    message = message_from_bytes(box.messages[0][1].content)
    assert message["Subject"].startswith("[WARNING] cpu_percent (warning)")
    assert box.messages[0][1].rcpt_tos == ["ops@example.org"]
    by_channel = {a.channel: a for a in attempts(sessions)}
    assert by_channel["email"].ok is True
    assert by_channel["webhook"].ok is False
    assert f"did not answer within {timeout:g} s" in by_channel["webhook"].error
    assert "secret-token" not in by_channel["webhook"].error


@sqlite_only
def test_failed_deliveries_are_retried_with_backoff_and_every_attempt_recorded(sessions):
    hook = Webhook(statuses=[500, 503])
    try:
        start = time.monotonic()
        tries = deliver(
            WebhookChannel(hook.url, timeout=5),
            NOTE,
            max_attempts=4,
            backoff_seconds=0.2,
            record=db_recorder(sessions),
        )
        elapsed = time.monotonic() - start
    finally:
        hook.close()
    assert [(t.attempt, t.ok) for t in tries] == [(1, False), (2, False), (3, True)]
    assert elapsed >= 0.2 + 0.4  # the doubling backoff between the tries
    assert len(hook.bodies) == 3
    rows = attempts(sessions)
    assert [(r.attempt, r.ok, r.alert_id) for r in rows] == [
        (1, False, 7),
        (2, False, 7),
        (3, True, 7),
    ]
    assert "answered HTTP 500" in rows[0].error and "answered HTTP 503" in rows[1].error


@sqlite_only
def test_an_unreachable_smtp_server_does_not_block_the_log_channel(sessions, caplog):
    dead = free_port()  # nothing listens there
    email = EmailChannel(SmtpSettings(host="127.0.0.1", port=dead, to=["a@example.org"]))
    dispatcher = Dispatcher(
        [email, LogChannel()], record=db_recorder(sessions), max_attempts=2, backoff_seconds=0.1
    )
    try:
        dispatcher.submit(NOTE)
        assert dispatcher.drain(10)
    finally:
        dispatcher.stop()
    rows = attempts(sessions)
    assert [(r.channel, r.attempt, r.ok) for r in rows if r.channel == "email"] == [
        ("email", 1, False),
        ("email", 2, False),
    ]
    assert [(r.channel, r.ok) for r in rows if r.channel == "log"] == [("log", True)]
    first_email = next(r for r in rows if r.channel == "email")
    assert f"The SMTP server 127.0.0.1:{dead} could not be reached" in first_email.error


def test_misconfigured_channels_say_what_to_set():
    with pytest.raises(SctkError, match="alerts.smtp.host"):
        EmailChannel(SmtpSettings())
    with pytest.raises(SctkError, match="alerts.smtp.to"):
        EmailChannel(SmtpSettings(host="mail.example.org"))
    with pytest.raises(SctkError, match="not a webhook URL"):
        WebhookChannel("ftp://example.org/x")


# -- the CLI ----------------------------------------------------------------------------------


def _one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_cli_webhook_is_stored_encrypted_and_test_notify_reaches_it(home, webhook, settings):
    bad = run_sctk("alerts", "set-webhook", "--url-stdin", home=home, input="not a url\n")
    assert "not a webhook URL" in _one_line_error(bad)
    # a secret on the command line is refused, pointing to the ways that keep it off argv
    on_argv = run_sctk("alerts", "set-webhook", webhook.url, home=home)
    assert "--url-stdin" in _one_line_error(on_argv)
    assert "not taken on the command line" in _one_line_error(on_argv)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            assert s.scalar(select(Secret).where(Secret.name == WEBHOOK_SECRET)) is None

        unset = run_sctk("alerts", "test-notify", "webhook", home=home)
        assert "sctk alerts set-webhook" in _one_line_error(unset)

        ok = run_sctk("alerts", "set-webhook", "--url-stdin", home=home, input=webhook.url)
        assert ok.returncode == 0, ok.stderr
        with session_scope(engine) as s:
            secret = s.scalar(select(Secret).where(Secret.name == WEBHOOK_SECRET))
            assert secret is not None
            assert "secret-token" not in secret.ciphertext  # encrypted at rest

        sent = run_sctk("alerts", "test-notify", "webhook", "--json", home=home)
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["ok"] is True
        (body,) = webhook.bodies
        assert body["text"].startswith("[INFO] test: sctk test notification")
        with session_scope(engine) as s:
            rows = list(s.scalars(select(NotificationAttempt)))
            assert [(r.channel, r.kind, r.ok) for r in rows] == [
                ("webhook", "test", False),
                ("webhook", "test", True),
            ] or [(r.channel, r.kind, r.ok) for r in rows] == [("webhook", "test", True)]
    finally:
        engine.dispose()


@sqlite_only
def test_cli_test_notify_email_against_real_and_unreachable_servers(home, smtp):
    box, port = smtp
    env = {
        "SCTK_ALERTS__SMTP__HOST": "127.0.0.1",
        "SCTK_ALERTS__SMTP__PORT": str(port),
        "SCTK_ALERTS__SMTP__TO": '["ops@example.org"]',
        "SCTK_ALERTS__SMTP__TIMEOUT_SECONDS": "3",
    }
    sent = run_sctk("alerts", "test-notify", "email", home=home, env=env)
    assert sent.returncode == 0, sent.stderr
    assert "test message sent over email" in sent.stdout
    assert len(box.messages) == 1

    dead = free_port()
    start = time.monotonic()
    failed = run_sctk(
        "alerts",
        "test-notify",
        "email",
        home=home,
        env={**env, "SCTK_ALERTS__SMTP__PORT": str(dead)},
    )
    line = _one_line_error(failed)
    assert line.startswith(f"Error: The SMTP server 127.0.0.1:{dead} could not be reached")
    assert "alerts.smtp.port" in line
    assert time.monotonic() - start < 30

    unknown = run_sctk("alerts", "test-notify", "pager", home=home)
    assert "Unknown channel 'pager'; choose one of: log, webhook, email." in _one_line_error(
        unknown
    )
    unset = run_sctk("alerts", "test-notify", "email", home=home)
    assert "alerts.smtp.host" in _one_line_error(unset)
    assert len(box.messages) == 1


@sqlite_only
def test_broadcast_reaches_every_configured_channel(settings, sessions, webhook, smtp):
    from sctk.monitoring.notifiers import broadcast, set_webhook
    from sctk.security.keyring import Keyring

    box, port = smtp
    ring = Keyring.load(settings.home)
    cfg = AlertSettings(
        smtp=SmtpSettings(host="127.0.0.1", port=port, to=["ops@example.org"]), trend_rules=[]
    )
    with sessions() as s:
        set_webhook(s, ring, webhook.url, actor="tests")
        s.commit()
        made = broadcast(NOTE, cfg, s, ring, record=db_recorder(sessions), timeout=20)
    assert sorted((a.channel, a.ok) for a in made) == [
        ("email", True),
        ("log", True),
        ("webhook", True),
    ]
    assert len(webhook.bodies) == 1 and len(box.messages) == 1
    assert len(attempts(sessions)) == 3

    from sctk.monitoring.notifiers import endpoints

    hook_port = webhook.server.server_address[1]
    with sessions() as s:
        assert endpoints(cfg, s, ring) == [
            ("webhook", "127.0.0.1", hook_port),
            ("email", "127.0.0.1", port),
        ]
