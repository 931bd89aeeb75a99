"""`sctk emergency`: the maintenance guide's emergency response as recorded steps.

assess (health checks, current metrics) -> isolate (pause job intake and the scheduler) ->
restart workers (end the processes that run jobs; their loops start fresh ones) -> clear
temporary files -> optionally restore the latest verified backup -> notify -> verify
recovery (and resume intake when healthy). Every step is a line on an incident's timeline,
so the response can be read back afterwards; a step that fails is recorded and the response
goes on, since an emergency is no time to stop half-way.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from sctk.config import Settings
from sctk.errors import SctkError
from sctk.runstate import PID_FILE
from sctk.runtime import Runtime
from sctk.storage.engine import session_scope

log = logging.getLogger(__name__)
Confirm = Callable[[str], bool]


@dataclass
class Step:
    name: str
    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class EmergencyReport:
    incident_id: int
    steps: list[Step] = field(default_factory=list)
    recovered: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "recovered": self.recovered,
            "steps": [asdict(s) for s in self.steps],
        }


def _is_sctk(proc: psutil.Process) -> bool:
    try:
        return any("sctk" in part for part in proc.cmdline())
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def job_pool_processes() -> list[psutil.Process]:
    """Processes of the local job pools: 'spawn' children of sctk service or worker processes."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if "multiprocessing.spawn" not in cmdline and "spawn_main" not in cmdline:
            continue
        try:
            parent = proc.parent()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if parent is not None and _is_sctk(parent):
            found.append(proc)
    return found


def restart_workers(settings: Settings, engine) -> Step:
    from sctk.jobs import queue

    procs = job_pool_processes()
    for p in procs:
        p.terminate()
    gone, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()
    with session_scope(engine) as s:
        requeued = queue.requeue_stale(s, settings.jobs.stale_after_seconds)
        ids = [j.id for j in requeued]
    return Step(
        "restart_workers",
        True,
        f"ended {len(procs)} job process(es); the worker loops start new ones; "
        f"{len(ids)} job(s) of silent workers re-queued",
        {"pids": [p.pid for p in procs], "requeued": ids},
    )


def end_sessions(engine, actor: str, reason: str = "") -> Step:
    """End every login session (JWT) at once, in every API process on the database: for a
    response to stolen credentials. Personal API tokens are revoked one by one."""
    from sctk.security import sessions

    with session_scope(engine) as s:
        moment = sessions.revoke_all(s, actor, reason or "emergency")
    return Step(
        "end_sessions",
        True,
        "ended every login session; everyone logs in again",
        {"not_before": moment.isoformat()},
    )


def clear_tmp(settings: Settings) -> Step:
    from sctk.ops.maintenance.files import remove

    tmp = settings.home / "tmp"
    keep = {tmp / PID_FILE.name}
    removed, freed = [], 0
    for path in sorted(tmp.iterdir()) if tmp.is_dir() else []:
        # a restore in progress keeps its staging and journal here
        if path in keep or path.name.startswith(".restore") or path.name.startswith("restore"):
            continue
        freed += remove(path)
        removed.append(path.name)
    return Step(
        "clear_tmp",
        True,
        f"removed {len(removed)} item(s) from tmp/, {freed} bytes",
        {"removed": removed, "bytes": freed},
    )


def latest_usable(repo) -> tuple[Any, list[str]]:
    """The snapshot an emergency restores: the newest regular backup that was verified and
    found consistent; never a safety snapshot, never an inconsistent one. With it, a sentence
    for each newer inconsistent snapshot passed over."""
    from sctk.backup import kinds

    snap, skipped = kinds.newest_usable(repo, verified_only=True)
    if snap is None:
        raise SctkError(
            " ".join(
                [
                    *skipped,
                    "There is no verified, consistent backup to restore; run 'sctk backup verify'.",
                ]
            )
        )
    return snap, skipped


def restore_latest_verified(rt: Runtime, actor: str, confirm: Confirm) -> Step:
    from sctk.backup.location import open_repo
    from sctk.backup.restore_run import restore

    repo = open_repo(rt.settings)
    snap, skipped = latest_usable(repo)
    question = " ".join(
        [
            *skipped,
            f"Restore the latest verified backup, snapshot {snap.id[:8]} of "
            f"{snap.time:%Y-%m-%d %H:%M} UTC, over the data directory?",
        ]
    )
    if not confirm(question):
        return Step(
            "restore",
            True,
            "restore declined: the data directory was kept",
            {"snapshot": snap.id, "declined": True, "skipped": skipped},
        )
    result = restore(rt, repo, snap.id, force=True, actor=actor)
    return Step(
        "restore",
        True,
        " ".join(
            [
                *skipped,
                f"restored snapshot {snap.id[:8]} ({result.files} files); safety snapshot "
                f"{(result.safety_snapshot or '')[:8]}",
            ]
        ),
        {**result.as_dict(), "skipped": skipped},
    )


def notify(settings: Settings, engine, text: str) -> Step:
    from sctk.monitoring import notifiers
    from sctk.security.keyring import Keyring

    note = notifiers.Notification(
        kind="firing",
        title=f"emergency response on {socket.gethostname()}",
        text=text,
        severity="critical",
    )
    with session_scope(engine) as s:
        attempts = notifiers.broadcast(
            note,
            settings.alerts,
            s,
            Keyring.load(settings.home),
            record=notifiers.db_recorder(sessionmaker(engine)),
        )
    delivered = sorted({a.channel for a in attempts if a.ok})
    failed = sorted({a.channel for a in attempts if not a.ok} - set(delivered))
    return Step(
        "notify",
        not failed,
        f"notified over {', '.join(delivered) or 'no channel'}"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
        {"delivered": delivered, "failed": failed},
    )


def _why(exc: Exception) -> str:
    return exc.message if isinstance(exc, SctkError) else f"{type(exc).__name__}: {exc}"


def _after_restore(rt: Runtime, report: EmergencyReport, actor: str, reason: str) -> int:
    """The restored database predates this response: it holds neither the pause nor the
    incident. Pause again, and write the timeline so far into it; the incident id it gets."""
    from sctk.jobs import switches
    from sctk.monitoring import incidents

    rt.release()  # pooled SQLite connections still point at the replaced file
    with rt.session() as s:
        switches.turn_on(s, switches.JOBS_PAUSED, actor, reason or "emergency")
        switches.turn_on(s, switches.SCHEDULER_PAUSED, actor, reason or "emergency")
        try:
            incidents.get(s, report.incident_id)
            return report.incident_id
        except SctkError:
            pass
        title = f"emergency response{': ' + reason if reason else ''}"
        incident = incidents.open_incident(s, title, "critical", actor=actor)
        for step in report.steps:
            text = ("" if step.ok else "FAILED: ") + step.summary
            incidents.add_event(
                s,
                incident.id,
                f"emergency.{step.name}",
                text,
                actor,
                details={"rewritten_after_restore": True},
            )
        return incident.id


def assess(rt: Runtime) -> Step:
    """Step 1: the health checks and the current system metrics, as found."""
    from sctk.health import Status, run_checks
    from sctk.monitoring.service import current

    health = run_checks(rt)
    metrics = current(rt.settings)["metrics"]
    bad = [f"{o.name} {o.status.name}" for o in health.outcomes if o.status is not Status.OK]
    return Step(
        "assess",
        True,
        f"health {health.status.name}"
        + (f" ({', '.join(bad)})" if bad else "")
        + f"; cpu {metrics.get('cpu_percent', 0):.0f}%, memory "
        f"{metrics.get('memory_percent', 0):.0f}%",
        {"health": health.as_dict(), "metrics": metrics},
    )


def isolate(engine: Engine, actor: str, reason: str) -> Step:
    """Step 2: pause job intake and the scheduler."""
    from sctk.jobs import switches

    with session_scope(engine) as s:
        jobs = switches.turn_on(s, switches.JOBS_PAUSED, actor, reason or "emergency")
        sched = switches.turn_on(s, switches.SCHEDULER_PAUSED, actor, reason or "emergency")
    return Step(
        "isolate",
        True,
        "paused job intake and the scheduler",
        {"newly_paused": {"jobs": jobs, "scheduler": sched}},
    )


def verify(rt: Runtime, actor: str, keep_paused: bool) -> Step:
    """The last step: the health checks again; healthy (OK or WARNING), job intake and the
    scheduler resume unless KEEP_PAUSED. The step is ok when healthy."""
    from sctk.health import Status, run_checks
    from sctk.jobs import switches

    health = run_checks(rt)
    healthy = health.status in (Status.OK, Status.WARNING)
    resumed = False
    if healthy and not keep_paused:
        with session_scope(rt.engine) as s:
            switches.turn_off(s, switches.JOBS_PAUSED, actor)
            switches.turn_off(s, switches.SCHEDULER_PAUSED, actor)
        resumed = True
    return Step(
        "verify",
        healthy,
        f"health {health.status.name}; "
        + (
            "job intake and scheduler resumed"
            if resumed
            else "job intake and scheduler stay paused ('sctk jobs resume')"
        ),
        {"health": health.as_dict(), "resumed": resumed},
    )


def _incident(engine: Engine, incident_id: int | None, reason: str, actor: str) -> int:
    """The incident the response records its steps on: INCIDENT_ID, else a new one."""
    from sctk.monitoring import incidents

    with session_scope(engine) as s:
        if incident_id is None:
            return incidents.open_incident(
                s,
                f"emergency response{': ' + reason if reason else ''}",
                "critical",
                actor=actor,
            ).id
        incidents.get(s, incident_id)  # NotFound: one sentence, nothing done
    return incident_id


def run_emergency(
    rt: Runtime,
    *,
    actor: str,
    reason: str = "",
    incident_id: int | None = None,
    restore: str = "ask",  # ask | yes | no
    confirm: Confirm = lambda _q: False,
    keep_paused: bool = False,
    end_all_sessions: bool = False,
) -> EmergencyReport:
    from sctk.monitoring import incidents

    settings, engine = rt.settings, rt.engine
    report = EmergencyReport(_incident(engine, incident_id, reason, actor))

    def record(step: Step) -> None:
        report.steps.append(step)
        with session_scope(engine) as s:
            incidents.add_event(
                s,
                report.incident_id,
                f"emergency.{step.name}",
                ("" if step.ok else "FAILED: ") + step.summary,
                actor,
                details=step.details,
            )
        log.info("emergency %s: %s", step.name, step.summary)

    def attempt(name: str, fn: Callable[[], Step]) -> None:
        try:
            record(fn())
        except Exception as exc:  # record it and go on
            record(Step(name, False, _why(exc)))

    attempt("assess", lambda: assess(rt))
    attempt("isolate", lambda: isolate(engine, actor, reason))
    if end_all_sessions:
        attempt("end_sessions", lambda: end_sessions(engine, actor, reason))
    attempt("restart_workers", lambda: restart_workers(settings, engine))
    attempt("clear_tmp", lambda: clear_tmp(settings))
    if restore != "no":
        # not through attempt(): the incident may only exist again after _after_restore
        try:
            step = restore_latest_verified(
                rt, actor, (lambda _q: True) if restore == "yes" else confirm
            )
        except Exception as exc:  # record it and go on
            step = Step("restore", False, _why(exc))
        if step.ok and not step.details.get("declined"):
            report.incident_id = _after_restore(rt, report, actor, reason)
        record(step)
    done = ", ".join(f"{s.name} {'ok' if s.ok else 'FAILED'}" for s in report.steps)
    attempt("notify", lambda: notify(settings, engine, f"Steps so far: {done}."))

    def verified() -> Step:
        step = verify(rt, actor, keep_paused)
        report.recovered = step.ok
        return step

    attempt("verify", verified)
    return report
