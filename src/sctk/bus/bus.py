"""The message bus: signed envelopes delivered to named subscribers, with retries and
dead letters; across processes on PostgreSQL (LISTEN/NOTIFY), within one process on SQLite.

Delivery runs on one thread per bus, fed by a time-ordered queue. A thread rather than
asyncio because most publishers are synchronous code outside any event loop (job workers,
the CLI, SQLAlchemy's after-commit hook) and a handler that waits for its retry must not
hold any of them up; asyncio code (the WebSocket route) subscribes with a handler that hands
the envelope to its loop with `call_soon_threadsafe`. One thread also keeps a handler's
calls in publication order. A handler must therefore be quick and must not block: a slow
one delays every other delivery of its bus.

Semantics: at-least-once, per process. A message goes to every subscription of every
listening process whose pattern matches its type (and whose name equals its target, unless
the target is '*'). On PostgreSQL, `publish` stores the envelope in `bus_messages` and
sends `NOTIFY sctk_bus, '<id>'` in one transaction; each process's listener thread loads,
verifies and delivers it locally (skipping the messages that process published itself, which
were delivered locally at once). On SQLite there is no cross-process delivery: a message
reaches only the subscribers of the process that publishes it.
"""

from __future__ import annotations

import atexit
import heapq
import inspect
import itertools
import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, text

from sctk import config
from sctk.bus.envelope import (
    BROADCAST,
    MAX_NAME,
    Envelope,
    Handler,
    InvalidEnvelope,
    sign,
    verify,
)
from sctk.config import Settings
from sctk.security.keyring import Keyring
from sctk.storage.engine import make_engine, normalise_url
from sctk.storage.models import BusMessage, DeadLetter, utcnow

log = logging.getLogger(__name__)
# How long Bus.start waits for LISTEN by default. A module constant rather than a literal
# default so that a test of an unreachable database (the API still starts, and answers 503)
# can shorten the wait instead of sitting it out.
LISTEN_WAIT_SECONDS = 10.0

CHANNEL = "sctk_bus"
RETENTION = timedelta(hours=1)  # how long bus_messages rows are kept for late listeners
PRUNE_EVERY = 300.0  # seconds between two prunings by one publisher
LISTEN_POLL = 0.5  # seconds the listener waits for a notification before checking for stop
MAX_RETRY_DELAY = 3600.0
_REMEMBERED_IDS = 10_000
STAT_NAMES = (
    "published",
    "delivered",
    "rejected",
    "retried",
    "dead_lettered",
    "replayed",  # dropped: an envelope id this bus had taken already
    "expired",  # dropped: created longer ago than bus.max_age_seconds (or in the future)
)


def type_matches(pattern: str, message_type: str) -> bool:
    """'job.event' matches itself; 'job', 'job.' and 'job.*' match every 'job.…'; '*' all."""
    if pattern in ("*", ""):
        return True
    base = pattern[:-2] if pattern.endswith(".*") else pattern.rstrip(".")
    return message_type == base or message_type.startswith(base + ".")


@dataclass(eq=False)
class Subscription:
    pattern: str
    handler: Handler
    name: str
    bus: Bus
    active: bool = True

    def matches(self, envelope: Envelope) -> bool:
        return (
            self.active
            and type_matches(self.pattern, envelope.type)
            and envelope.target in (BROADCAST, self.name)
        )

    def cancel(self) -> None:
        """Stop receiving; deliveries still waiting for a retry are dropped."""
        self.bus.unsubscribe(self)


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    envelope: Envelope = field(compare=False)
    sub: Subscription = field(compare=False)
    attempt: int = field(compare=False, default=1)
    last_error: str = field(compare=False, default="")


class _Recent:
    """A bounded set of message ids, forgetting the oldest first."""

    def __init__(self, size: int = _REMEMBERED_IDS):
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> None:
        self._ids[key] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        return key in self._ids


def default_source() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:MAX_NAME]


class Bus:
    """Publish signed messages and deliver them to subscribers. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        source: str | None = None,
        engine: Engine | None = None,
        keyring: Keyring | None = None,
    ):
        self.settings = settings
        self.source = source or default_source()
        self.keyring = keyring or Keyring.load(settings.home)
        self._own_engine = engine is None
        self.engine = engine or make_engine(settings)
        self.cross_process = self.engine.url.get_backend_name() == "postgresql"
        self.listening = threading.Event()  # set while the listener has LISTEN in place
        self._cond = threading.Condition(threading.RLock())
        self._subs: list[Subscription] = []
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._own_ids = _Recent()  # published here: already delivered locally
        self._seen_ids = _Recent()  # received from the listener: never delivered twice
        # every envelope taken from outside (publish of a signed envelope, receive): a
        # captured message sent again is dropped, not acted on twice
        self._taken_ids = _Recent()
        self._delivery_thread: threading.Thread | None = None
        self._delivery_stop = False
        self._listener_thread: threading.Thread | None = None
        self._listener_stop = threading.Event()
        self._users = 0
        self._last_prune = float("-inf")
        self._last_pk = 0

    # -- subscribers ----------------------------------------------------------------------

    def subscribe(self, type_or_prefix: str, handler: Handler, name: str) -> Subscription:
        """Call HANDLER(envelope) on the bus thread for each matching message.

        NAME identifies the handler in dead letters and is what a replay targets; it must be
        unique within the bus.
        """
        if not name or len(name) > MAX_NAME:
            raise ValueError(f"a subscription name must have 1 to {MAX_NAME} characters")
        if inspect.iscoroutinefunction(handler):
            raise ValueError("bus handlers run on a thread: pass a plain function")
        sub = Subscription(type_or_prefix, handler, name, self)
        with self._cond:
            if any(s.name == name for s in self._subs):
                raise ValueError(f"the bus already has a subscriber named {name!r}")
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._cond:
            sub.active = False
            if sub in self._subs:
                self._subs.remove(sub)
            kept = [d for d in self._heap if d.sub is not sub]
            if len(kept) != len(self._heap):
                self._heap = kept
                heapq.heapify(self._heap)
            self._cond.notify_all()

    def has_subscriber(self, name: str) -> bool:
        with self._cond:
            return any(s.name == name for s in self._subs)

    def subscriber_names(self) -> list[str]:
        with self._cond:
            return [s.name for s in self._subs]

    # -- publishing and receiving ---------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """This process's counters: published, delivered, rejected, retried, dead_lettered."""
        with self._cond:
            return dict(self._stats)

    def _count(self, name: str) -> None:
        with self._cond:
            self._stats[name] += 1

    def _verified(self, data: Any) -> Envelope:
        try:
            return verify(self.keyring, data)
        except InvalidEnvelope as exc:
            self._count("rejected")
            msg_id = str(data.get("id"))[:64] if isinstance(data, dict) else None
            log.warning("bus message %s rejected: %s", msg_id, exc.reason)
            raise

    def _fresh(self, envelope: Envelope) -> bool:
        """Whether ENVELOPE, verified, may be acted on: neither taken before (a replay) nor
        older than bus.max_age_seconds; a dropped one is counted and logged."""
        max_age = self.settings.bus.max_age_seconds
        age = (utcnow() - datetime.fromisoformat(envelope.created_at)).total_seconds()
        with self._cond:
            if envelope.id in self._taken_ids or envelope.id in self._own_ids:
                self._stats["replayed"] += 1
                reason = "it was received before (a replay)"
            elif age > max_age or age < -max_age:  # a clock that far ahead is no excuse
                self._stats["expired"] += 1
                reason = f"it was created {age:.0f} s ago, more than bus.max_age_seconds"
            else:
                self._taken_ids.add(envelope.id)
                return True
        log.warning("bus message %s (%s) dropped: %s", envelope.id, envelope.type, reason)
        return False

    def publish(
        self,
        envelope_or_type: Envelope | dict[str, Any] | str,
        payload: dict[str, Any] | None = None,
        target: str = BROADCAST,
    ) -> Envelope:
        """Publish a message: a type and payload (signed here), or an already signed envelope
        (verified first: an unsigned or altered one is counted and InvalidEnvelope raised)."""
        if isinstance(envelope_or_type, str):
            envelope = sign(
                self.keyring, envelope_or_type, payload or {}, source=self.source, target=target
            )
        else:
            data = envelope_or_type
            if isinstance(data, Envelope):
                data = data.to_dict()
            envelope = self._verified(data)
            if not self._fresh(envelope):
                return envelope
        with self._cond:
            self._stats["published"] += 1
            self._own_ids.add(envelope.id)
        self._dispatch(envelope)
        if self.cross_process:
            self._send(envelope)
        return envelope

    def receive(self, data: Any) -> Envelope | None:
        """Deliver a message that arrived from elsewhere; None (counted) if it is rejected,
        replayed (an id taken before) or older than bus.max_age_seconds."""
        try:
            envelope = self._verified(data)
        except InvalidEnvelope:
            return None
        if not self._fresh(envelope):
            return None
        self._dispatch(envelope)
        return envelope

    def _send(self, envelope: Envelope) -> None:
        # The row and the NOTIFY commit together: a listener woken by the id finds the row.
        with self.engine.begin() as conn:
            conn.execute(
                insert(BusMessage).values(
                    message_id=envelope.id,
                    type=envelope.type,
                    envelope=envelope.to_dict(),
                    created_at=utcnow(),
                )
            )
            conn.execute(
                text("SELECT pg_notify(:channel, :id)"), {"channel": CHANNEL, "id": envelope.id}
            )
        if time.monotonic() - self._last_prune > PRUNE_EVERY:
            self._last_prune = time.monotonic()
            try:
                self.prune()
            except Exception:  # pruning is housekeeping; the next one retries
                log.warning("pruning bus_messages failed", exc_info=True)

    def prune(self, older_than: timedelta = RETENTION) -> int:
        """Delete bus_messages rows older than OLDER_THAN; returns how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(BusMessage).where(BusMessage.created_at < utcnow() - older_than)
            )
        return result.rowcount or 0

    # -- local delivery -------------------------------------------------------------------

    def _dispatch(self, envelope: Envelope) -> None:
        with self._cond:
            now = time.monotonic()
            targets = [s for s in self._subs if s.matches(envelope)]
            for sub in targets:
                heapq.heappush(self._heap, _Delivery(now, next(self._seq), envelope, sub))
            if targets:
                self._ensure_delivery_thread()
                self._cond.notify_all()

    def _ensure_delivery_thread(self) -> None:
        if self._delivery_thread is None or not self._delivery_thread.is_alive():
            self._delivery_stop = False
            self._delivery_thread = threading.Thread(
                target=self._delivery_loop, name="sctk-bus-delivery", daemon=True
            )
            self._delivery_thread.start()

    def _delivery_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._delivery_stop:
                        return
                    now = time.monotonic()
                    if self._heap and self._heap[0].due <= now:
                        item = heapq.heappop(self._heap)
                        self._in_flight += 1
                        break
                    self._cond.wait(self._heap[0].due - now if self._heap else None)
            try:
                self._attempt(item)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _attempt(self, item: _Delivery) -> None:
        if not item.sub.active:
            return
        try:
            item.sub.handler(item.envelope)
        except Exception as exc:  # any handler failure is retried, then kept
            error = f"{type(exc).__name__}: {exc}"[:4000]
            if item.attempt < self.settings.bus.max_attempts:
                delay = min(
                    self.settings.bus.backoff_seconds * 2 ** (item.attempt - 1), MAX_RETRY_DELAY
                )
                log.info(
                    "bus handler %s failed on %s (attempt %d), retrying in %.2f s: %s",
                    item.sub.name,
                    item.envelope.id,
                    item.attempt,
                    delay,
                    error,
                )
                with self._cond:
                    self._stats["retried"] += 1
                    if item.sub.active:
                        heapq.heappush(
                            self._heap,
                            _Delivery(
                                time.monotonic() + delay,
                                next(self._seq),
                                item.envelope,
                                item.sub,
                                item.attempt + 1,
                                error,
                            ),
                        )
                        self._cond.notify_all()
                return
            self._dead_letter(item.envelope, item.sub.name, item.attempt, error)
            return
        self._count("delivered")

    def _dead_letter(self, envelope: Envelope, handler: str, attempts: int, error: str) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(DeadLetter).values(
                        message_id=envelope.id,
                        type=envelope.type,
                        handler=handler,
                        envelope=envelope.to_dict(),
                        attempts=attempts,
                        last_error=error,
                        created_at=utcnow(),
                    )
                )
        except Exception:  # nowhere left to keep it: say so loudly
            log.error(
                "bus message %s for handler %s could not be kept as a dead letter",
                envelope.id,
                handler,
                exc_info=True,
            )
            return
        self._count("dead_lettered")
        log.warning(
            "bus message %s (%s) is a dead letter for handler %s after %d attempts: %s",
            envelope.id,
            envelope.type,
            handler,
            attempts,
            error,
        )

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery, retries included, is done; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._heap or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # -- the cross-process listener (PostgreSQL) ------------------------------------------

    def _dsn(self) -> str:
        return self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

    def _listen_loop(self) -> None:
        import psycopg

        delay = 0.2
        connected_before = False
        while not self._listener_stop.is_set():
            try:
                with psycopg.connect(
                    self._dsn(),
                    autocommit=True,
                    connect_timeout=self.settings.database.connect_timeout,
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if connected_before:
                        self._catch_up()  # what was published while the connection was down
                    else:
                        with self.engine.connect() as db:
                            self._last_pk = db.scalar(select(func.max(BusMessage.id))) or 0
                    connected_before = True
                    self.listening.set()
                    delay = 0.2
                    while not self._listener_stop.is_set():
                        for note in conn.notifies(timeout=LISTEN_POLL):
                            self._on_notify(note.payload)
                            if self._listener_stop.is_set():
                                break
            except Exception as exc:  # reconnect whatever broke
                self.listening.clear()
                if self._listener_stop.is_set():
                    break
                log.warning("bus listener lost its connection (%s); reconnecting", exc)
                self._listener_stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self.listening.clear()

    def _on_notify(self, message_id: str) -> None:
        if message_id in self._own_ids or message_id in self._seen_ids:
            return
        with self._cond:
            if not self._subs:
                return  # nobody here to deliver to: spare the query
        try:
            with self.engine.connect() as db:
                row = db.execute(
                    select(BusMessage.id, BusMessage.envelope).where(
                        BusMessage.message_id == message_id
                    )
                ).first()
        except Exception:  # one lost message must not stop the listener
            log.error("bus message %s could not be loaded", message_id, exc_info=True)
            return
        if row is None:
            return  # pruned already, or a NOTIFY someone sent by hand
        self._last_pk = max(self._last_pk, row.id)
        self._seen_ids.add(message_id)
        self.receive(row.envelope)

    def _catch_up(self) -> None:
        with self.engine.connect() as db:
            rows = db.execute(
                select(BusMessage.id, BusMessage.message_id, BusMessage.envelope)
                .where(BusMessage.id > self._last_pk)
                .order_by(BusMessage.id)
            ).all()
        for row in rows:
            self._last_pk = max(self._last_pk, row.id)
            if row.message_id in self._own_ids or row.message_id in self._seen_ids:
                continue
            self._seen_ids.add(row.message_id)
            self.receive(row.envelope)

    # -- life cycle -----------------------------------------------------------------------

    def start(self, listen: bool = True, timeout: float | None = None) -> Bus:
        """Start delivering (and, on PostgreSQL with LISTEN, receiving from other processes).

        Counted: each start needs a stop; the last stop shuts the bus down. Waits up to
        TIMEOUT (default LISTEN_WAIT_SECONDS) for LISTEN to be in place, so that nothing
        published after start is missed.
        """
        if timeout is None:
            timeout = LISTEN_WAIT_SECONDS
        with self._cond:
            self._users += 1
            self._ensure_delivery_thread()
            start_listener = (
                listen
                and self.cross_process
                and (self._listener_thread is None or not self._listener_thread.is_alive())
            )
            if start_listener:
                self._listener_stop.clear()
                self._listener_thread = threading.Thread(
                    target=self._listen_loop, name="sctk-bus-listener", daemon=True
                )
                self._listener_thread.start()
        if start_listener and not self.listening.wait(timeout):
            log.error("the bus listener is not listening after %.0f s; it keeps trying", timeout)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Undo one start; the last one stops the listener and the delivery thread."""
        with self._cond:
            self._users = max(0, self._users - 1)
            if self._users:
                return
        self.shutdown(timeout)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop now: finish queued deliveries for up to TIMEOUT seconds; what is still
        waiting for a retry then becomes a dead letter rather than being lost."""
        self._listener_stop.set()
        listener = self._listener_thread
        if listener is not None and listener is not threading.current_thread():
            listener.join(timeout=LISTEN_POLL * 4 + self.settings.database.connect_timeout)
        self.drain(timeout)
        with self._cond:
            self._users = 0
            left, self._heap = self._heap, []
            self._delivery_stop = True
            self._cond.notify_all()
            thread = self._delivery_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)
        for item in left:
            if item.sub.active:
                self._dead_letter(
                    item.envelope,
                    item.sub.name,
                    item.attempt - 1,
                    item.last_error or "the bus stopped before the message was delivered",
                )
        if self._own_engine:
            self.engine.dispose()


# -- one bus per database in a process -----------------------------------------------------

_registry: dict[str, Bus] = {}
_registry_lock = threading.Lock()
_no_bus: set[str] = set()
# Buses inherited through fork: kept referenced and never closed in the child, because their
# connections belong to the parent (closing one would end the parent's session).
_inherited: list[Bus] = []


def _key(url: Any) -> str:
    if not isinstance(url, str):
        url = url.render_as_string(hide_password=False)  # str(URL) would mask the password
    return normalise_url(url).render_as_string(hide_password=False)


def get_bus(settings: Settings, *, source: str | None = None, engine: Engine | None = None) -> Bus:
    """This process's bus for the database of SETTINGS, created on first use (no threads
    until something is delivered or `start` is called). ENGINE is the process's own
    (`sctk.runtime.Runtime.engine`), lent to a bus made here; without it the bus builds one."""
    key = _key(settings.db_url)
    with _registry_lock:
        bus = _registry.get(key)
        if bus is None:
            bus = _registry[key] = Bus(settings, source=source, engine=engine)
            _no_bus.discard(key)
        return bus


def bus_for_url(url: Any) -> Bus | None:
    """The bus already made for the database at URL; else the one of the data directory the
    environment names (SCTK_HOME) if it uses that database; else None."""
    key = _key(url)
    with _registry_lock:
        bus = _registry.get(key)
        if bus is not None or key in _no_bus:
            return bus
    try:
        loaded = config.load().settings
        if _key(loaded.db_url) == key and (loaded.home / "keys").is_dir():
            return get_bus(loaded)
    except Exception:  # no usable default data directory
        pass
    with _registry_lock:
        _no_bus.add(key)
    log.warning(
        "no bus for %s in this process: job events are stored but not published; "
        "call sctk.bus.get_bus(settings) at start",
        normalise_url(key).render_as_string(hide_password=True),
    )
    return None


def shutdown_all(timeout: float = 5.0) -> None:
    """Shut down every bus of this process and forget them (process exit, tests)."""
    with _registry_lock:
        buses = list(_registry.values())
        _registry.clear()
        _no_bus.clear()
    for bus in buses:
        try:
            bus.shutdown(timeout)
        except Exception:  # at exit, one broken bus must not hide the others
            log.error("stopping the bus failed", exc_info=True)


def _forget_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # it may have been held by a thread that did not fork
    _inherited.extend(_registry.values())
    _registry.clear()
    _no_bus.clear()


os.register_at_fork(after_in_child=_forget_after_fork)
atexit.register(shutdown_all, 2.0)
