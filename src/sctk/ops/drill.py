"""The disaster-recovery drill: restore the latest snapshot into a scratch data directory,
start sctk on it on a port of 127.0.0.1 (`[drill] port`, or a free one), check its health and
make one prediction, then stop it and remove it. Recovery time (RTO) runs from the start of the
restore until the restored service has answered both; the data age (RPO) is how old the
snapshot was when the drill began.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from sctk.config import Settings
from sctk.errors import SctkError

if TYPE_CHECKING:
    from sctk.runtime import Runtime

READY_TIMEOUT = 120.0


def _port(settings: Settings) -> int:
    """The port the restored copy is served on: [drill] port when set (refused at once when
    something holds it, before anything is restored), else one the system says is free."""
    wanted = settings.drill.port
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError as exc:
            raise SctkError(
                f"The drill's port {wanted} on 127.0.0.1 is not free ({exc.strerror}); set "
                "[drill] port to a free port, or to 0 to let the drill pick one."
            ) from None
        return s.getsockname()[1]


def _wait_ready(base: str, proc: subprocess.Popen, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
            raise SctkError(f"The restored service exited with {proc.returncode}: {tail}")
        try:
            r = httpx.get(f"{base}/health/ready", timeout=5)
            if r.status_code in (200, 503):
                return {"status": r.status_code, "checks": r.json().get("checks", r.json())}
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SctkError(f"The restored service did not answer within {READY_TIMEOUT:.0f} s.")


def _token(target_settings: Settings) -> str:
    """A token for a throwaway account made in the restored copy (which the drill deletes),
    so that the drill needs no one's credentials."""
    import secrets
    from datetime import timedelta

    from sctk.security import tokens, users
    from sctk.storage.engine import one_off_session

    with one_off_session(target_settings) as s:
        user = users.create(s, "dr-drill", secrets.token_urlsafe(24), "analyst", "dr-drill")
        plain, _ = tokens.create(s, user, "dr-drill", timedelta(minutes=30), "dr-drill")
        return plain


def _one_prediction(target_settings: Settings, base: str) -> dict[str, Any]:
    from sqlalchemy import select

    from sctk.storage.engine import one_off_session
    from sctk.storage.models import UqModel
    from sctk.uq import registry
    from sctk.uq.model_kind import kind_of

    with one_off_session(target_settings) as s:
        row = s.scalar(select(UqModel).order_by(UqModel.id.desc()).limit(1))
        if row is None:
            return {"made": False, "why": "the snapshot holds no model"}
        body = kind_of(row).example_request(row)
        model_id, label = row.id, registry.label(row)
    token = _token(target_settings)
    r = httpx.post(
        f"{base}/api/v1/models/{model_id}/predict",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    if r.status_code != 200:
        raise SctkError(f"The restored service refused the prediction ({r.status_code}): {r.text}")
    out = r.json()
    return {"made": True, "model": label, "mean": out["mean"][:1], "psi": out["psi"][:1]}


def dr_drill(rt: Runtime, actor: str = "scheduler") -> dict[str, Any]:
    """Run the drill; {"rto_seconds", "rpo_seconds", "snapshot", ...}. Leaves nothing behind."""
    from sctk import config
    from sctk.backup import dbload, kinds
    from sctk.backup.location import open_repo
    from sctk.backup.restore_run import restore

    settings = rt.settings
    began = datetime.now(UTC)
    _port(settings)  # a configured port that is taken: refused before the restore
    repo = open_repo(settings)
    snap, skipped = kinds.newest_usable(repo)
    if snap is None:
        raise SctkError(" ".join([*skipped, "There is no regular backup to drill; take one."]))
    rpo = (began - snap.time).total_seconds()
    scratch = settings.home / "tmp" / "scratch" / f"dr-drill-{began:%Y%m%dT%H%M%S}"
    scratch_db = None if settings.is_sqlite else dbload.scratch_url(settings.db_url, "dr_drill")
    proc = None
    log = scratch.with_suffix(".log")
    started = time.perf_counter()
    try:
        result = restore(
            rt,
            repo,
            snap.id,
            target=scratch,
            database_url=scratch_db,
            safety_backup=False,
            actor=actor,
        )
        target_settings = config.load(scratch).settings
        port = _port(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
        env |= {
            "SCTK_HOME": str(scratch),
            "SCTK_SERVER__HOST": "127.0.0.1",
            "SCTK_SERVER__PORT": str(port),
            "SCTK_SERVER__WORKERS": "1",
            # the copy must not act: no scheduled maintenance, no jobs taken from its queue
            "SCTK_MAINTENANCE__SCHEDULER_IN_SERVE": "false",
            "SCTK_JOBS__WORKERS": "0",
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sctk", "serve"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        health = _wait_ready(base, proc, log)
        prediction = _one_prediction(target_settings, base)
        rto = time.perf_counter() - started
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)
        log.unlink(missing_ok=True)
        if scratch_db is not None and dbload.database_exists(scratch_db):
            dbload.drop_database(scratch_db)
    return {
        "snapshot": snap.id,
        "snapshot_time": snap.time.isoformat(),
        "rto_seconds": round(rto, 2),
        "rpo_seconds": round(rpo, 1),
        "restored_files": result.files,
        "restored_bytes": result.bytes,
        "port": port,
        "health_status": health["status"],
        "prediction": prediction,
        "skipped": skipped,
    }
