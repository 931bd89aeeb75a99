"""Health checks of the running service: memory, CPU load, worker heartbeats, the scheduler,
errors in the logs, and connectivity to every configured endpoint.

Only memory exhaustion and an unreachable database make the service "not ready" (CRITICAL);
a busy CPU, a stale worker, errors in the logs, or an off-site backup target or mail relay
being down are WARNINGs: none of them is fixed by a load balancer sending traffic elsewhere.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from sqlalchemy import func, or_, select

from sctk.errors import SctkError
from sctk.health.registry import PROBES, CheckContext, CheckOutcome, Status, check
from sctk.logs import LOG_FILE
from sctk.storage.engine import ping

NEWEST_ERRORS = 5
ERROR_LEVELS = ("ERROR", "CRITICAL")
_DEFAULT_PORTS = {"http": 80, "https": 443, "smtp": 25, "smtps": 465, "sftp": 22, "ssh": 22}


def _now() -> datetime:
    return datetime.now(UTC)


@check("memory", "Memory in use is below monitor.memory_warning_percent / _critical_percent.")
def memory(ctx: CheckContext) -> CheckOutcome:
    m = ctx.settings.monitor
    vm = psutil.virtual_memory()
    used = round(float(vm.percent), 1)
    values = {
        "used_percent": used,
        "available_bytes": vm.available,
        "total_bytes": vm.total,
        "warning_above_percent": m.memory_warning_percent,
        "critical_above_percent": m.memory_critical_percent,
    }
    if used > m.memory_critical_percent:
        status = Status.CRITICAL
    elif used > m.memory_warning_percent:
        status = Status.WARNING
    else:
        status = Status.OK
    avail_gib = vm.available / 2**30
    return CheckOutcome("memory", status, f"{used:.1f}% used ({avail_gib:.1f} GiB free)", values)


@check("cpu_load", "The 1-minute load average per core is below monitor.load_warning_per_core.")
def cpu_load(ctx: CheckContext) -> CheckOutcome:
    m = ctx.settings.monitor
    cores = psutil.cpu_count() or 1
    load1, load5, load15 = os.getloadavg()
    per_core = round(load1 / cores, 2)
    values = {
        "load1_per_core": per_core,
        "load1": round(load1, 2),
        "load5": round(load5, 2),
        "load15": round(load15, 2),
        "cores": cores,
        "warning_above": m.load_warning_per_core,
    }
    message = f"load {load1:.2f} on {cores} core(s) ({per_core:.2f} per core)"
    # at most a WARNING: a busy instance still answers correctly, and failing readiness would
    # make the load balancer move its load onto the others (the CPU alert rules page for it)
    if per_core > m.load_warning_per_core:
        return CheckOutcome(
            "cpu_load", Status.WARNING, f"{message}, above {m.load_warning_per_core:g}", values
        )
    return CheckOutcome("cpu_load", Status.OK, message, values)


@check("workers", "Running jobs' workers heartbeat; queued jobs are being picked up.",
       depends_on=("database", "migrations"))  # fmt: skip
def workers(ctx: CheckContext) -> CheckOutcome:
    from sctk.storage.models import Job

    stale_after = ctx.settings.jobs.stale_after_seconds
    now = _now()
    cutoff = now - timedelta(seconds=stale_after)
    with ctx.engine.connect() as conn:
        running = conn.scalar(select(func.count()).where(Job.status == "running")) or 0
        stale = conn.execute(
            select(Job.id, Job.worker, Job.heartbeat_at)
            .where(
                Job.status == "running",
                or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff),
            )
            .order_by(Job.id)
            .limit(20)
        ).all()
        waiting = (
            conn.scalar(select(func.count()).where(Job.status == "queued", Job.run_after < cutoff))
            or 0
        )
    values: dict[str, Any] = {
        "running": running,
        "stale": len(stale),
        "queued_overdue": waiting,
        "stale_after_seconds": stale_after,
    }
    if stale:
        values["stale_jobs"] = [
            {"id": i, "worker": w, "heartbeat_at": h.isoformat() if h else None}
            for i, w, h in stale
        ]
        first = stale[0]
        return CheckOutcome(
            "workers",
            Status.WARNING,
            f"{len(stale)} running job(s) without a heartbeat for {stale_after:g} s "
            f"(job {first.id} on {first.worker or 'no worker'}); they will be re-queued — "
            "check that 'sctk worker' or 'sctk serve' is alive",
            values,
        )
    if waiting and not running:
        return CheckOutcome(
            "workers",
            Status.WARNING,
            f"{waiting} job(s) queued for more than {stale_after:g} s and none running; "
            "start a worker ('sctk worker' or 'sctk serve' with jobs.workers > 0)",
            values,
        )
    return CheckOutcome(
        "workers", Status.OK, f"{running} running job(s), every worker heartbeating", values
    )


@check("scheduler", "The maintenance scheduler holds its lease.",
       depends_on=("database", "migrations"))  # fmt: skip
def scheduler(ctx: CheckContext) -> CheckOutcome:
    """A scheduler renews its lease while it runs; one that stopped lets it expire. A database
    no scheduler has ever run on (a CLI-only installation) is not a failure."""
    from sqlalchemy.orm import Session

    from sctk.storage.lease import LEASE_NAMES
    from sctk.storage.models import Lease

    with Session(ctx.engine) as session:
        row = session.get(Lease, LEASE_NAMES["scheduler"])
    if row is None:
        return CheckOutcome("scheduler", Status.OK, "no scheduler has run on this database yet")
    values = {"holder": row.holder, "expires_at": row.expires_at.isoformat()}
    if row.expires_at < _now():
        return CheckOutcome(
            "scheduler",
            Status.WARNING,
            f"the scheduler lease of {row.holder} expired at {row.expires_at:%Y-%m-%d %H:%M:%S} "
            "UTC; no scheduler is running (start 'sctk serve' or 'sctk scheduler')",
            values,
        )
    return CheckOutcome("scheduler", Status.OK, f"held by {row.holder}", values)


# --- errors in the logs --------------------------------------------------------------------


def _errors_in(lines: Iterable[bytes]) -> Iterator[tuple[datetime, dict[str, Any]]]:
    """(time, summary) of each ERROR/CRITICAL JSON line among LINES."""
    for raw in lines:
        # cheap filter first: most lines are INFO and never need parsing
        if b'"level": "ERROR"' not in raw and b'"level": "CRITICAL"' not in raw:
            continue
        try:
            entry = json.loads(raw)
            at = datetime.fromisoformat(entry["time"])
        except (ValueError, KeyError, TypeError):
            continue
        if at.tzinfo is None:  # sctk writes UTC; a line without a zone is taken as UTC
            at = at.replace(tzinfo=UTC)
        if entry.get("level") not in ERROR_LEVELS:
            continue
        yield (
            at,
            {
                "time": at.isoformat(),
                "logger": entry.get("logger", ""),
                "message": str(entry.get("message", ""))[:300],
                "request_id": entry.get("request_id"),
            },
        )


def _newest(found: Iterable[tuple[datetime, dict[str, Any]]]) -> list[tuple[datetime, dict]]:
    return sorted(found, key=lambda item: item[0])[-NEWEST_ERRORS:]


def _log_files(log_dir: Path) -> list[Path]:
    return sorted(log_dir.glob(f"{LOG_FILE}*")) if log_dir.is_dir() else []


def log_errors_since(log_dir: Path, since: datetime) -> tuple[int, list[dict[str, Any]]]:
    """(count, newest few) of ERROR/CRITICAL JSON log lines at or after SINCE in LOG_DIR's
    sctk.log and its rotated files."""
    count = 0
    newest: list[tuple[datetime, dict[str, Any]]] = []
    for path in _log_files(log_dir):
        try:
            if datetime.fromtimestamp(path.stat().st_mtime, UTC) < since:
                continue  # written to last before the period: nothing in it is recent
            with path.open("rb") as fh:
                for at, summary in _errors_in(fh):
                    if at >= since:
                        count += 1
                        newest = _newest([*newest, (at, summary)])
        except OSError:
            continue
    return count, [summary for _, summary in reversed(newest)]


class _FileErrors:
    """What one log file (by inode: rotation renames it) held up to OFFSET: errors counted
    per minute and the newest few. Only lines appended since are read on the next call."""

    CHUNK = 1 << 20

    def __init__(self) -> None:
        self.offset = 0
        self.minutes: Counter[datetime] = Counter()
        self.newest: list[tuple[datetime, dict[str, Any]]] = []

    def read_from(self, path: Path) -> None:
        with path.open("rb") as fh:
            fh.seek(self.offset)
            while chunk := fh.read(self.CHUNK):
                # up to the last whole line: one still being written is read next time
                end = chunk.rfind(b"\n") + 1
                if end == 0:
                    break
                found = list(_errors_in(chunk[:end].splitlines()))
                for at, _ in found:
                    self.minutes[at.replace(second=0, microsecond=0)] += 1
                self.newest = _newest([*self.newest, *found])
                self.offset += end
                fh.seek(self.offset)

    def forget_before(self, since: datetime) -> None:
        for minute in [m for m in self.minutes if m < since]:
            del self.minutes[minute]
        self.newest = [item for item in self.newest if item[0] >= since]


# (log dir, inode) -> what that file held: a readiness probe polled every few seconds reads
# only what was appended since its last call, not tens of MiB of logs each time
_scans: dict[tuple[Path, int], _FileErrors] = {}
_scans_lock = threading.Lock()


def _log_errors_24h(log_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    since = (_now() - timedelta(hours=24)).replace(second=0, microsecond=0)
    with _scans_lock:
        seen: dict[tuple[Path, int], _FileErrors] = {}
        for path in _log_files(log_dir):
            try:
                st = path.stat()
                if datetime.fromtimestamp(st.st_mtime, UTC) < since:
                    continue
                key = (log_dir, st.st_ino)
                scan = _scans.get(key)
                if scan is None or st.st_size < scan.offset:  # new, or truncated
                    scan = _FileErrors()
                if st.st_size > scan.offset:
                    scan.read_from(path)
            except OSError:
                continue
            scan.forget_before(since)
            seen[key] = scan
        for key in [k for k in _scans if k[0] == log_dir and k not in seen]:
            del _scans[key]  # rotated away or too old
        _scans.update(seen)
        count = sum(sum(scan.minutes.values()) for scan in seen.values())
        newest = _newest(item for scan in seen.values() for item in scan.newest)
    return count, [summary for _, summary in reversed(newest)]


@check("log_errors", "Errors written to the logs in the last 24 hours.")
def log_errors(ctx: CheckContext) -> CheckOutcome:
    count, newest = _log_errors_24h(ctx.settings.home / "logs")
    values = {"errors_24h": count, "newest": newest}
    if not count:
        return CheckOutcome(
            "log_errors", Status.OK, "no errors logged in the last 24 hours", values
        )
    last = newest[0]
    return CheckOutcome(
        "log_errors",
        Status.WARNING,
        f"{count} error(s) logged in the last 24 hours; newest at {last['time'][:19]}: "
        f"{last['message'][:120]}",
        values,
    )


# --- connectivity --------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    name: str  # what it is for: "backup repository", "smtp", "monitor.endpoints[0]"
    host: str
    port: int


def parse_endpoint(name: str, value: str, default_port: int | None = None) -> Endpoint | None:
    """host:port or scheme://[user@]host[:port]/...; None when it names no network host
    (a local path, file://)."""
    value = value.strip()
    if "://" in value:
        parts = urlsplit(value)
        if parts.scheme == "file" or not parts.hostname:
            return None
        try:
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme) or default_port
        except ValueError:
            return None
        return Endpoint(name, parts.hostname, port) if port else None
    host, sep, port_text = value.rpartition(":")
    if sep and host and port_text.isdigit():
        return Endpoint(name, host.strip("[]"), int(port_text))
    if default_port and value and "/" not in value:
        return Endpoint(name, value, default_port)
    return None


def _walk_hosts(prefix: str, data: Any) -> list[Endpoint]:
    """URLs and host/port pairs anywhere in a settings section (read defensively: the section
    belongs to another part of sctk and may change shape)."""
    found: list[Endpoint] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if key.endswith("host") and isinstance(value, str) and value:
                port_key = key[: -len("host")] + "port"
                port = data.get(port_key)
                ep = parse_endpoint(f"{prefix}.{key}", value, port if isinstance(port, int) else 25)
                if ep:
                    found.append(ep)
            elif isinstance(value, dict | list):
                found += _walk_hosts(f"{prefix}.{key}", value)
            elif isinstance(value, str) and "://" in value:
                ep = parse_endpoint(f"{prefix}.{key}", value)
                if ep:
                    found.append(ep)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if isinstance(value, dict | list):
                found += _walk_hosts(f"{prefix}[{i}]", value)
            elif isinstance(value, str) and "://" in value:
                ep = parse_endpoint(f"{prefix}[{i}]", value)
                if ep:
                    found.append(ep)
    return found


def configured_endpoints(settings: Any) -> list[Endpoint]:
    """The network endpoints the settings name, besides the database."""
    found: list[Endpoint] = []  # a remote backup repository is probed on its own
    alerts = getattr(settings, "alerts", None)
    if alerts is not None:
        try:
            # secrets stay hidden: only host names and ports are read from them
            dumped = alerts.model_dump(mode="json") if hasattr(alerts, "model_dump") else {}
        except Exception:
            dumped = {}
        found += _walk_hosts("alerts", dumped)
    for i, value in enumerate(settings.monitor.endpoints):
        ep = parse_endpoint(f"monitor.endpoints[{i}]", value)
        if ep:
            found.append(ep)
    unique: dict[tuple[str, int], Endpoint] = {}
    for ep in found:
        unique.setdefault((ep.host, ep.port), ep)
    return list(unique.values())


def tcp_probe(ep: Endpoint, timeout: float) -> dict[str, Any]:
    """Connect to EP; its latency in ms, or the error."""
    start = time.perf_counter()
    try:
        with socket.create_connection((ep.host, ep.port), timeout=timeout):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return {"name": ep.name, "target": f"{ep.host}:{ep.port}", "ok": False, "error": reason}
    ms = (time.perf_counter() - start) * 1000.0
    return {
        "name": ep.name,
        "target": f"{ep.host}:{ep.port}",
        "ok": True,
        "latency_ms": round(ms, 2),
    }


@check("connectivity", "The database and every configured endpoint answer, with latency.")
def connectivity(ctx: CheckContext) -> CheckOutcome:
    results: list[dict[str, Any]] = []
    probed = ctx.outcomes.get("database")
    if probed is not None:
        # the database check of this run already waited on it: a stalled server costs once
        db_ok = probed.status in (Status.OK, Status.WARNING)
        latency = probed.values.get("latency_ms")
        results.append(
            {"name": "database", "ok": True, "latency_ms": latency}
            if db_ok
            else {"name": "database", "ok": False, "error": probed.message}
        )
    else:
        try:
            latency = ping(ctx.engine)
            results.append({"name": "database", "ok": True, "latency_ms": round(latency, 2)})
            db_ok = True
        except SctkError as exc:
            results.append({"name": "database", "ok": False, "error": exc.message})
            db_ok = False
    endpoints = configured_endpoints(ctx.settings)
    probes = list(PROBES.values())

    timeout = ctx.settings.monitor.connect_timeout_seconds
    # side by side: several dead hosts cost one timeout, not one each. The domains' own
    # probes (the backup repository, asked through its storage driver: S3's endpoint is not
    # in its URL, and credentials count) run beside the endpoints
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(endpoints) + len(probes)))) as pool:
        asked = [pool.submit(probe, ctx.settings) for probe in probes]
        results += list(pool.map(lambda ep: tcp_probe(ep, timeout), endpoints))
        found = [a.result() for a in asked]
    results += [r for r in found if r is not None]
    failed = [r for r in results if not r["ok"]]
    # the headline first: `sctk health` shows the first value in its table
    values = {"reachable": f"{len(results) - len(failed)}/{len(results)}", "endpoints": results}
    if not db_ok:
        return CheckOutcome("connectivity", Status.CRITICAL, results[0]["error"], values)
    if failed:
        named = "; ".join(f"{r['name']} ({r['target']}): {r['error']}" for r in failed)
        return CheckOutcome(
            "connectivity",
            Status.WARNING,
            f"{len(failed)} of {len(results)} endpoint(s) unreachable: {named}",
            values,
        )
    shown = ", ".join(f"{r['name']} {r['latency_ms']:.0f} ms" for r in results)
    return CheckOutcome("connectivity", Status.OK, f"all reachable: {shown}", values)
