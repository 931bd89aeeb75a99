"""Upgrades with automatic rollback, as the maintenance guide's update procedure.

`upgrade` takes a pre-update backup, checks the configuration still loads, migrates the
database, then validates the result (health checks and a smoke prediction). Any failure
after the backup restores it, so the data directory and database end as they began; the
audit log then records the attempt and the rollback (written after the restore, which would
otherwise take those entries back out). A migration that cannot be downgraded marks a major
upgrade, which the operator confirms against the guide's checklist first.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from alembic.script.revision import RevisionError

from sctk import crashpoints, runstate
from sctk.config import Settings
from sctk.errors import SctkError
from sctk.fsutil import atomic_write
from sctk.runtime import Runtime
from sctk.storage import migrate
from sctk.storage.engine import one_off_session

log = logging.getLogger(__name__)
PRE_UPDATE = "pre-update"
CHECKLIST = (
    "a recent backup has been verified (sctk backup verify --latest --read-data)",
    "users have been told of the maintenance window",
    "the release notes of this version have been read",
    "a rollback (sctk rollback) has been planned and its time allowed for",
)


@dataclass
class UpgradePlan:
    current: str | None
    target: str
    steps: list[str]
    major: list[str] = field(default_factory=list)  # revisions that cannot be downgraded


@dataclass
class UpgradeResult:
    ok: bool
    before: str | None
    after: str | None
    snapshot: str | None
    message: str
    rolled_back: bool = False
    validation: dict[str, Any] = field(default_factory=dict)
    renamed: list[str] = field(default_factory=list)  # settings moved to their new names
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _irreversible(rev: str) -> bool:
    module = migrate.script().get_revision(rev).module
    return bool(getattr(module, "IRREVERSIBLE", False))


def plan(rt: Runtime, to: str = "head") -> UpgradePlan:
    now = migrate.current(rt.engine)
    script = migrate.script()
    if to != "head" and not migrate._known(to):
        raise SctkError(
            f"Unknown revision '{to}'; 'sctk db history' lists the revisions there are."
        )
    target = script.get_revision(to).revision if to != "head" else migrate.head()
    older = SctkError(f"Revision '{to}' is older than the database's '{now}'; use 'sctk rollback'.")
    try:
        steps = [r.revision for r in script.iterate_revisions(target, now or "base")]
    except RevisionError:  # the target is not above the database's revision
        raise older from None
    steps.reverse()  # oldest first
    if now is not None and target != now and not steps:
        raise older
    return UpgradePlan(now, target, steps, [r for r in steps if _irreversible(r)])


def smoke_prediction(settings: Settings) -> dict[str, Any]:
    """Load the newest model from the registry and predict one of its calibration rows (a
    field model: one field of zeros)."""
    from sqlalchemy import select

    from sctk.storage.models import UqModel
    from sctk.uq import registry
    from sctk.uq.model_kind import kind_of

    with one_off_session(settings) as s:
        row = s.scalar(select(UqModel).order_by(UqModel.id.desc()).limit(1))
        if row is None:
            return {"made": False, "why": "no model in the registry"}
        model = registry.load(settings.home, row)
        X = kind_of(row).smoke_input(s, settings.home, row, model)
        out = model.predict_interval(X, alpha=0.1)
        if not np.all(np.isfinite(out["mean"])):
            raise SctkError(f"The smoke prediction of model {registry.label(row)} is not finite.")
        return {"made": True, "model": registry.label(row)}


def validate(settings: Settings) -> dict[str, Any]:
    """Health checks and a smoke prediction after an upgrade; raises on a failure."""
    from sctk import config
    from sctk.health import Status, run_checks
    from sctk.runtime import Runtime

    fresh = config.load(settings.home).settings  # the configuration still loads
    with Runtime(fresh) as rt:  # on what the upgraded directory now says
        report = run_checks(rt)
    bad = [o for o in report.outcomes if o.status is Status.CRITICAL]
    if bad:
        raise SctkError("Validation failed: " + "; ".join(f"{o.name}: {o.message}" for o in bad))
    return {"health": report.status.name, "prediction": smoke_prediction(fresh)}


def _audit(settings: Settings, event: str, actor: str, outcome: str, details: dict) -> None:
    from sctk.security import audit_log

    with one_off_session(settings) as s:
        audit_log.record(s, event, actor=actor, target="sctk", outcome=outcome, details=details)


def _restore_snapshot(rt: Runtime, snapshot: str, actor: str) -> None:
    from sctk.backup.location import open_repo
    from sctk.backup.restore_run import restore

    # never force: a service that started meanwhile is refused by the same rule as the
    # upgrade itself, rather than left writing to a database file the restore replaced
    restore(
        rt,
        open_repo(rt.settings),
        snapshot,
        safety_backup=False,
        actor=actor,
        migrate=False,
    )


JOURNAL = Path("tmp") / "upgrade.json"  # in tmp/: the restore of a rollback keeps it


def _journal(settings: Settings) -> Path:
    return settings.home / JOURNAL


def _read_journal(settings: Settings) -> dict[str, Any] | None:
    try:
        return json.loads(_journal(settings).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SctkError(
            f"The journal of an interrupted upgrade, {_journal(settings)}, is unreadable "
            f"({exc}); roll back with 'sctk rollback', then delete it."
        ) from None


def _undo(
    rt: Runtime, journal: dict[str, Any], why: str, actor: str, started: float
) -> UpgradeResult:
    """Restore the pre-update snapshot of the upgrade JOURNAL describes, which failed (WHY)."""
    settings = rt.settings
    snap, target = journal["snapshot"], journal["to"]
    log.error("upgrade to %s failed (%s); restoring snapshot %s", target, why, snap)
    crashpoints.reached("upgrade.rolling-back")
    _restore_snapshot(rt, snap, actor)
    details = {**journal, "error": why}
    _audit(settings, "upgrade.attempt", actor, "failure", details)
    _audit(settings, "upgrade.rollback", actor, "ok", details)
    _journal(settings).unlink(missing_ok=True)
    return UpgradeResult(
        False,
        journal["from"],
        journal["from"],
        snap,
        f"The upgrade to {target} failed ({why}); rolled back to snapshot {snap[:8]}.",
        rolled_back=True,
        seconds=time.perf_counter() - started,
    )


def _validated(rt: Runtime, journal: dict[str, Any], actor: str, started: float) -> UpgradeResult:
    """Validate the upgrade JOURNAL describes, its migration done; undo it if that fails."""
    settings = rt.settings
    try:
        checked = validate(settings)
        crashpoints.reached("upgrade.validated")
    except Exception as exc:  # every failure rolls back the same way
        why = exc.message if isinstance(exc, SctkError) else f"{type(exc).__name__}: {exc}"
        return _undo(rt, journal, why, actor, started)
    _audit(settings, "upgrade.attempt", actor, "ok", {**journal, **checked})
    _journal(settings).unlink(missing_ok=True)
    snap = journal["snapshot"]
    return UpgradeResult(
        True,
        journal["from"],
        journal["to"],
        snap,
        f"Upgraded {journal['from'] or 'base'} -> {journal['to']}; pre-update snapshot {snap[:8]}.",
        validation=checked,
        renamed=journal.get("renamed", []),
        seconds=time.perf_counter() - started,
    )


def _resume(rt: Runtime, journal: dict[str, Any], actor: str, started: float):
    """Finish an upgrade a kill interrupted: validated when its migration reached the target
    (the result), else undone from its pre-update snapshot (None: upgrade afresh)."""
    settings = rt.settings
    now = migrate.current(rt.engine)
    rt.release()  # no connection open on the file an undo replaces
    journal = {**journal, "resumed": True}
    if now == journal["to"]:
        log.warning("finishing the interrupted upgrade to %s: validating it", journal["to"])
        return _validated(rt, journal, actor, started)
    log.warning("undoing the upgrade to %s interrupted at %s", journal["to"], now)
    _restore_snapshot(rt, journal["snapshot"], actor)
    _audit(settings, "upgrade.rollback", actor, "ok", {**journal, "interrupted_at": now})
    _journal(settings).unlink(missing_ok=True)
    return None


def upgrade(
    rt: Runtime,
    to: str = "head",
    *,
    actor: str = "cli",
    confirm: Callable[[UpgradePlan], bool] | None = None,
    migrate_fn: Callable[..., Any] | None = None,
) -> UpgradeResult:
    """Upgrade to TO; on any failure, roll back by itself. CONFIRM is asked for a major one.

    A journal in tmp/ names the pre-update snapshot while the upgrade runs: an upgrade killed
    midway is finished (validated) or undone by the next run, which then goes on."""
    from sctk.backup.create import create_backup

    settings = rt.settings
    started = time.perf_counter()
    pending = _read_journal(settings)
    if pending is not None:
        runstate.refuse_while_serving(settings.home, "the upgrade")
        finished = _resume(rt, pending, actor, started)
        if finished is not None:
            return finished
    p = plan(rt, to)
    rt.release()  # no idle connection left on the database the backup below copies
    if not p.steps:
        return UpgradeResult(
            True, p.current, p.current, None, f"Already at {p.current}; nothing to do."
        )
    runstate.refuse_while_serving(settings.home, "the upgrade")
    if p.major and (confirm is None or not confirm(p)):
        raise SctkError(
            f"Revision(s) {', '.join(p.major)} cannot be downgraded (a major upgrade); confirm "
            "the checklist, or pass --yes."
        )
    snap = create_backup(rt, PRE_UPDATE, actor=actor)["id"]
    journal: dict[str, Any] = {"from": p.current, "to": p.target, "snapshot": snap}
    atomic_write(_journal(settings), json.dumps(journal), mode=0o640)
    crashpoints.reached("upgrade.backed-up")
    try:
        from sctk.ops.config_migrate import migrate_config

        journal["renamed"] = migrate_config(settings)  # the configuration first: code reads it
        crashpoints.reached("upgrade.config-migrated")
        (migrate_fn or migrate.upgrade)(rt.engine, p.target)
        crashpoints.reached("upgrade.migrated")
    except Exception as exc:  # every failure rolls back the same way
        rt.release()  # no connection open on the file the restore replaces
        why = exc.message if isinstance(exc, SctkError) else f"{type(exc).__name__}: {exc}"
        return _undo(rt, journal, why, actor, started)
    finally:
        rt.release()
    return _validated(rt, journal, actor, started)


def rollback_target(settings: Settings, ref: str | None = None):
    """The pre-update snapshot REF names (default: the newest one); refused when there is none
    or REF is another kind of backup."""
    from sctk.backup.location import open_repo

    repo = open_repo(settings)
    pre = [s for s in repo.snapshots() if s.label == PRE_UPDATE]
    if ref is None:
        if not pre:
            raise SctkError(
                "There is no pre-update snapshot to roll back to; 'sctk upgrade' takes one "
                "before it changes anything."
            )
        snap = pre[-1]
    else:
        snap = repo.find_snapshot(ref)
        if snap.label != PRE_UPDATE:
            raise SctkError(
                f"Snapshot {snap.id[:8]} is a '{snap.label}' backup, not a pre-update one; "
                "use 'sctk restore' for it."
            )
    return snap


def rollback(rt: Runtime, ref: str | None = None, actor: str = "cli") -> dict[str, Any]:
    """Restore pre-update snapshot REF (default: the newest one)."""
    settings = rt.settings
    runstate.refuse_while_serving(settings.home, "the rollback")
    snap = rollback_target(settings, ref)
    _restore_snapshot(rt, snap.id, actor)
    details = {"snapshot": snap.id, "time": snap.time.isoformat()}
    _audit(settings, "upgrade.rollback", actor, "ok", details)
    return details
